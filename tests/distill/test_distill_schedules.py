"""Step-weight schedules: monotone in the commit step, mean 1 within every block.

Guards against normalising over the whole row (blocks with many steps would then dominate),
counting padding or EOS-only positions in a block's mean, and NaN for all-zero blocks.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from blockdistill.distill.schedules import (
    power,
    proportional,
    schedule_from_name,
    step_weights,
    uniform,
)


@st.composite
def block_steps(draw):
    """A (B, G) batch of commit steps over blocks of size L (prompt tail: first block partial)."""
    size = draw(st.integers(1, 5))
    b = draw(st.integers(1, 3))
    rows = []
    for _ in range(b):
        p = draw(st.integers(1, 9))
        nblocks = draw(st.integers(1, 4))
        end = (p // size + nblocks) * size
        idx = list(range(p, end))
        steps, totals = [], []
        for blk in sorted({i // size for i in idx}):
            members = [i for i in idx if i // size == blk]
            s = [draw(st.integers(1, len(members))) for _ in members]
            steps += s
            totals += [max(s)] * len(members)
        rows.append((idx, steps, totals))
    g = max(len(r[0]) for r in rows)
    def pad(vals, fill):
        return torch.tensor([v + [fill] * (g - len(v)) for v in vals])
    index = pad([r[0] for r in rows], 0)
    valid = pad([[1] * len(r[0]) for r in rows], 0).bool()
    index = torch.where(valid, index, index[:, :1])
    mask = valid & torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=g, max_size=g), min_size=b, max_size=b)))
    mask = mask | (valid & (torch.arange(g)[None] == 0))
    return size, index, pad([r[1] for r in rows], 1), pad([r[2] for r in rows], 1), mask


SCHEDS = [uniform, proportional, power(0.5), power(2.0)]


@given(block_steps(), st.sampled_from(SCHEDS))
def test_mean_one_per_block(data, schedule) -> None:
    size, index, step, total, mask = data
    w = step_weights(schedule, step, total, index // size, mask)
    assert bool((w[~mask] == 0).all())
    for b in range(index.shape[0]):
        for blk in (index[b][mask[b]] // size).unique():
            sel = mask[b] & (index[b] // size == blk)
            assert float(w[b][sel].mean()) == pytest.approx(1.0, abs=1e-5)


@given(block_steps(), st.sampled_from(SCHEDS))
def test_monotone_in_commit_step(data, schedule) -> None:
    size, index, step, total, mask = data
    w = step_weights(schedule, step, total, index // size, mask)
    blocks = index // size
    for b in range(index.shape[0]):
        pos = mask[b].nonzero()[:, 0].tolist()
        for i in pos:
            for j in pos:
                if blocks[b, i] == blocks[b, j] and step[b, i] < step[b, j]:
                    assert float(w[b, i]) <= float(w[b, j]) + 1e-6


def test_proportional_values() -> None:
    step = torch.tensor([[1, 3, 2, 1, 1]])
    index = torch.tensor([[4, 5, 6, 7, 8]])  # L = 4: block 1 = {4,5,6,7}, block 2 = {8}
    w = step_weights(proportional, step, torch.full_like(step, 3), index // 4, torch.ones_like(step, dtype=torch.bool))
    torch.testing.assert_close(w, torch.tensor([[4 / 7, 12 / 7, 8 / 7, 4 / 7, 1.0]]))


def test_user_callable_and_names() -> None:
    def late_only(k, n):
        return (k == n).float()

    step = torch.tensor([[1, 2, 2]])
    w = step_weights(late_only, step, torch.full_like(step, 2), torch.zeros_like(step), torch.ones_like(step, dtype=torch.bool))
    torch.testing.assert_close(w, torch.tensor([[0.0, 1.5, 1.5]]))
    assert schedule_from_name("proportional") is proportional
    assert schedule_from_name("power", 3.0)(torch.tensor([2]), torch.tensor([2])).item() == 8.0
    assert schedule_from_name("blockdistill.distill.schedules:uniform") is uniform
    with pytest.raises(ValueError, match="schedule must be one of"):
        schedule_from_name("linear")
    with pytest.raises(ValueError, match="could not be imported"):
        schedule_from_name("nowhere.module:fn")


def test_all_zero_block_stays_zero_not_nan() -> None:
    step = torch.tensor([[1, 1]])
    w = step_weights(lambda k, n: torch.zeros_like(k, dtype=torch.float), step, step, torch.zeros_like(step),
                     torch.ones_like(step, dtype=torch.bool))
    assert bool((w == 0).all())
