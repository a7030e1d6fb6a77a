"""Forward counts and statistics: the fused cache's whole point is one forward per block."""

import pytest
import torch

from blockdistill.sampling import (
    ConfidenceThreshold,
    OneStep,
    TraceSpec,
    ar_generate,
    block_generate,
)
from tests.sampling.helpers import denoiser, random_prompts, text_bd


@pytest.mark.parametrize("L", [2, 4, 8])
@pytest.mark.parametrize("shift", [False, True])
def test_one_step_forward_counts(L, shift):
    """Fused: N forwards for N blocks (+ prefill); block cache: 2 per block (the last block's
    KV is never needed, so 2N - 1); AR: one per token."""
    n_blocks = 4
    ids, plen = random_prompts([2 * L, 2 * L], 0)  # whole blocks: no prompt tail
    den = denoiser(text_bd(), L, shift)
    kw = dict(policy=OneStep(), max_new_tokens=n_blocks * L, stop_at_eos=False)
    fused = block_generate(den, ids, plen, cache="fused", **kw).stats
    block = block_generate(den, ids, plen, cache="block", **kw).stats
    assert (fused.nfe, fused.nfe_decode) == (n_blocks + 1, n_blocks)
    assert (block.nfe, block.nfe_decode) == (2 * n_blocks, 2 * n_blocks - 1)
    assert fused.tpf == L
    assert fused.generated_tokens == 2 * n_blocks * L and fused.lengths == [n_blocks * L] * 2
    ar = ar_generate(text_bd(), ids, plen, max_new_tokens=n_blocks * L, stop_at_eos=False).stats
    assert ar.nfe == n_blocks * L  # prefill yields the first token


@pytest.mark.parametrize("L", [2, 4, 8])
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("cache", ["fused", "block"])
def test_one_step_runs_the_lm_head_once_per_generated_token(L, shift, cache):
    """The cost rule: the LM head only where logits are used. One step per block, on whole
    blocks, uses one logit row per generated token, in every cached mode: with shift, a block's
    first token comes from the previous clean token (prefill, the write pass, or the fused pass),
    never from a recomputed head row."""
    bd = text_bd()
    head = bd.family.lm_head(bd.model)
    rows = []
    hook = head.register_forward_hook(lambda mod, args, out: rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    try:
        ids, plen = random_prompts([2 * L, 2 * L, 2 * L], 3)
        out = block_generate(denoiser(bd, L, shift), ids, plen, policy=OneStep(), cache=cache,
                             max_new_tokens=3 * L, stop_at_eos=False)
    finally:
        hook.remove()
    assert out.stats.generated_tokens == 3 * 3 * L
    assert sum(rows) == 3 * 3 * L, rows


def test_no_prefill_forward_when_the_prompt_fits_in_the_first_block():
    ids, plen = random_prompts([3], 1)
    st = block_generate(denoiser(text_bd(), 4, False), ids, plen, policy=OneStep(), cache="fused",
                        max_new_tokens=9, stop_at_eos=False).stats
    assert st.nfe == st.nfe_decode == 3  # blocks [0,4) with 3 prompt tokens, [4,8), [8,12)


def test_multi_step_counts_and_rates():
    """Fused multi-step decoding: one forward per denoising step of each block (the steps read
    from the trace), plus the prefill."""
    ids, plen = random_prompts([8], 2)
    out = block_generate(denoiser(text_bd(), 4, False), ids, plen, policy=ConfidenceThreshold(),
                         cache="fused", max_new_tokens=16, stop_at_eos=False, record=TraceSpec())
    st, tr = out.stats, out.traces[0]
    steps = [int(tr.step[tr.block_ids() == blk].max()) for blk in tr.block_ids().unique().tolist()]
    assert len(steps) == 4 and max(steps) > 1  # several steps somewhere: not the one-step count
    assert st.nfe_decode == sum(steps) and st.nfe == sum(steps) + 1
    assert st.tpf == pytest.approx(16 / st.nfe_decode)
    assert st.wall_s >= st.decode_s > 0 and st.prefill_s > 0
    assert st.tokens_per_s_decode >= st.tokens_per_s > 0
    d = st.as_dict()
    assert d["tpf"] == st.tpf and d["lengths"] == [16]


def test_stats_after_eos_count_only_returned_tokens():
    ids, plen = random_prompts([5], 3)
    den = denoiser(text_bd(), 4, False)
    free = block_generate(den, ids, plen, max_new_tokens=12, stop_at_eos=False).sequences[0].tolist()
    eos = free[5]
    out = block_generate(denoiser(text_bd(), 4, False, eos=eos), ids, plen, max_new_tokens=12)
    n = free.index(eos) + 1
    assert out.stats.lengths == [n] and out.stats.generated_tokens == n
    assert torch.equal(out.sequences[0], torch.tensor(free[:n]))
