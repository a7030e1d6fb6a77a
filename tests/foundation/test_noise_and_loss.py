"""Noising and the SDAR-weighted diffusion loss, checked against the formula of DESIGN.md §2."""

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from blockdistill import BlockDiffusionLM
from blockdistill.losses import diffusion_loss, gather_targets
from blockdistill.losses.noise import Noise, complement, sample_noise
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from tests.foundation.helpers import collate, random_examples


@st.composite
def maskables(draw):
    b = draw(st.integers(1, 4))
    size = draw(st.sampled_from([1, 2, 4]))
    p = draw(st.lists(st.integers(1, 9), min_size=b, max_size=b))
    r = draw(st.lists(st.integers(1, 9), min_size=b, max_size=b))
    width = max(pi + ri for pi, ri in zip(p, r)) + 2
    idx = torch.arange(width)[None]
    pt, nt = torch.tensor(p)[:, None], torch.tensor([pi + ri for pi, ri in zip(p, r)])[:, None]
    return (idx >= pt) & (idx < nt), size, draw(st.integers(0, 2**31))


@given(maskables(), st.booleans())
def test_prompt_never_masked_and_at_least_one_mask(case, per_block):
    maskable, size, seed = case
    z = sample_noise(maskable, size, eps=1e-3, per_block=per_block, generator=torch.Generator().manual_seed(seed))
    assert not (z.masked & ~maskable).any()
    assert z.masked.any(1).all()


@given(maskables())
def test_complementary_masks_cover_each_maskable_token_exactly_once(case):
    maskable, size, seed = case
    z = sample_noise(maskable, size, generator=torch.Generator().manual_seed(seed))
    c = complement(z, maskable)
    assert torch.equal(z.masked.int() + c.masked.int(), maskable.int())


def test_rates_follow_the_sdar_schedule():
    maskable = torch.ones(2000, 64, dtype=torch.bool)
    z = sample_noise(maskable, 4, eps=0.2, generator=torch.Generator().manual_seed(0))
    p = z.rate[:, 0]
    assert p.min() >= 0.2 and p.max() <= 1.0
    assert (z.rate == p[:, None]).all()  # one level per example
    # the empirical mask fraction per example tracks p
    assert (z.masked.float().mean(1) - p).abs().mean() < 0.06
    zb = sample_noise(maskable, 4, per_block=True, generator=torch.Generator().manual_seed(0))
    blocks = zb.rate.view(2000, 16, 4)
    assert (blocks == blocks[..., :1]).all() and not (zb.rate == zb.rate[:, :1]).all()


def test_gather_targets_packs_true_positions_in_order():
    m = torch.tensor([[False, True, False, True], [False, False, False, False], [True, True, True, True]])
    idx, present = gather_targets(m, torch.tensor([9, 8, 7]))
    assert idx.tolist() == [[1, 3, 9, 9], [8, 8, 8, 8], [0, 1, 2, 3]]
    assert present.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]


def test_diffusion_loss_equals_the_formula():
    """loss = sum over masked of CE / p, divided by the number of maskable tokens."""
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4)
    batch = collate(bd, random_examples([5, 3], [6, 9], seed=1))
    maskable = batch.maskable()
    z = sample_noise(maskable, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        loss, _ = diffusion_loss(bd, batch.input_ids, batch.prompt_lens, batch.seq_lens, maskable, [z])
        total = 0.0
        for b in range(2):
            pos = torch.nonzero(z.masked[b]).flatten()
            logits = bd.diffusion_logits(batch.input_ids[b:b + 1], batch.prompt_lens[b:b + 1],
                                         batch.seq_lens[b:b + 1, ], z.masked[b:b + 1, : batch.input_ids.shape[1]],
                                         pos[None])[0]
            ce = F.cross_entropy(logits, batch.input_ids[b, pos], reduction="none")
            total += (ce / z.rate[b, pos]).sum()
        expected = total / maskable.sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_complementary_loss_averages_both_halves():
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4)
    batch = collate(bd, random_examples([5, 3], [6, 9], seed=2))
    maskable = batch.maskable()
    z = sample_noise(maskable, 4, generator=torch.Generator().manual_seed(4))
    c = complement(z, maskable)
    args = (bd, batch.input_ids, batch.prompt_lens, batch.seq_lens, maskable)
    with torch.no_grad():
        both, _ = diffusion_loss(*args, [z, c])
        a, _ = diffusion_loss(*args, [z])
        b, _ = diffusion_loss(*args, [Noise(c.masked, c.rate)])
    torch.testing.assert_close(both, (a + b) / 2, rtol=1e-5, atol=1e-6)
