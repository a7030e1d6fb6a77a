"""``TokenDists`` and ``TrajectoryRecord`` invariants, and the batch the student trains on.

Guards against: top-k conversion that loses the leftover mass, records whose generated span
does not end on a block boundary or whose response end is not EOS being accepted, and batch
masks that put EOS padding in the KL term or batch padding anywhere.
"""

from __future__ import annotations

import pytest
import torch

from blockdistill.distill import TokenDists, TrajectoryRecord, collate_records


def test_topk_dense_round_trip_and_queries() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.1, 0.7]])
    full = TokenDists.full(probs)
    top = full.to_topk(2)
    assert top.indices[0].tolist() == [0, 1] and int(top.indices[1, 0]) == 3  # row 1: a tie for second
    torch.testing.assert_close(top.leftover, torch.tensor([0.2, 0.2]))
    torch.testing.assert_close(top.to_dense().probs.sum(-1), torch.ones(2))
    assert torch.equal(top.argmax(), torch.tensor([0, 3])) and torch.equal(full.argmax(), torch.tensor([0, 3]))
    torch.testing.assert_close(top.prob_of(torch.tensor([1, 3])), torch.tensor([0.3, 0.7]))
    assert float(top.prob_of(torch.tensor([2, 1]))[0]) == 0.0  # outside the top-k: unknown, reported as 0
    torch.testing.assert_close(full.to_topk(4).to_dense().probs, probs)
    assert full.to_topk(4).leftover.eq(0).all()
    hot = TokenDists.one_hot(torch.tensor([2, 1]), 4)
    torch.testing.assert_close(hot.to_dense().probs, torch.eye(4)[[2, 1]])
    stacked = TokenDists.pad_stack([top[:1], top], 3)
    assert stacked.shape == (2, 3) and stacked.values[0, 1:, 0].eq(1).all()
    with pytest.raises(ValueError, match="different forms"):
        TokenDists.cat([full, top])


def _record(**kw) -> TrajectoryRecord:
    base = dict(example_id="x", prompt_ids=torch.tensor([5, 6, 7]), tokens=torch.tensor([1, 9, 9, 9, 9]),
                commit_step=torch.tensor([1, 1, 2, 1, 1]), block_steps=torch.tensor([1, 2, 2, 1, 1]),
                target=TokenDists.one_hot(torch.tensor([1, 9, 9, 9, 9]), 12), block_size=4, eos_token_id=9,
                response_len=1)
    base.update(kw)
    return TrajectoryRecord(**base)


def test_record_invariants() -> None:
    r = _record()
    assert r.finished and r.response.tolist() == [1] and r.eos_mask.tolist() == [False, True, True, True, True]
    with pytest.raises(ValueError, match="block boundary"):
        _record(prompt_ids=torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="not EOS"):
        _record(response_len=0)
    with pytest.raises(ValueError, match="commit steps"):
        _record(commit_step=torch.tensor([1, 3, 2, 1, 1]))
    # Tokens after the first EOS are forced to EOS in the clean stream.
    odd = _record(tokens=torch.tensor([1, 9, 4, 9, 9]))
    assert odd.clean_ids.tolist() == [5, 6, 7, 1, 9, 9, 9, 9]


def test_batch_masks_and_layout() -> None:
    short = _record()
    long = _record(example_id="y", prompt_ids=torch.tensor([5]), tokens=torch.tensor([1, 2, 3, 4, 9, 9, 9]),
                   commit_step=torch.ones(7, dtype=torch.long), block_steps=torch.ones(7, dtype=torch.long),
                   target=TokenDists.one_hot(torch.tensor([1, 2, 3, 4, 9, 9, 9]), 12), response_len=4)
    b = collate_records([short, long], pad_token_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 1, 9, 9, 9, 9], [5, 1, 2, 3, 4, 9, 9, 9]]
    assert b.gen_valid.tolist() == [[True] * 5 + [False] * 2, [True] * 7]
    assert b.kl_mask.tolist() == [[True, True, False, False, False, False, False], [True] * 5 + [False] * 2]
    assert b.eos_mask.tolist() == [[False, True, True, True, True, False, False], [False] * 4 + [True] * 3]
    assert b.masked().tolist() == [[False] * 3 + [True] * 5, [False] + [True] * 7]
    assert b.block_index[1].tolist() == [0, 0, 0, 1, 1, 1, 1]
