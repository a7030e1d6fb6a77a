"""Batches: variable prompt lengths, per-row EOS, finished rows leaving the batch."""

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from blockdistill.sampling import ConfidenceThreshold, OneStep, ar_generate, block_generate
from tests.sampling.helpers import as_lists, denoiser, pick_eos, random_prompts, text_bd, variant


@settings(max_examples=10)
@given(L=st.sampled_from([1, 2, 4, 8]), shift=st.booleans(), lens=st.lists(st.integers(1, 12), min_size=2, max_size=4),
       cache=st.sampled_from(["none", "block", "fused"]), one_step=st.booleans(), seed=st.integers(0, 999))
@example(L=2, shift=False, lens=[1, 1], cache="block", one_step=False, seed=0)  # empty prefill, then a row drops
def test_batched_call_equals_one_row_at_a_time(L, shift, lens, cache, one_step, seed):
    """Guards: rows at different clean indices sharing one cache, rows leaving the batch (EOS at
    different blocks) and taking the wrong cache rows / masks / carried logits with them."""
    ids, plen = random_prompts(lens, seed)
    policy = OneStep() if one_step else ConfidenceThreshold()
    free = as_lists(block_generate(denoiser(text_bd(), L, shift), ids, plen, policy=policy, cache=cache,
                                   max_new_tokens=14, stop_at_eos=False))
    eos = pick_eos(free, exclude={text_bd().spec.mask_token_id})
    den = denoiser(text_bd(), L, shift, eos=eos)
    kw = dict(policy=policy, cache=cache, max_new_tokens=14)
    batched = block_generate(den, ids, plen, **kw)
    alone = [as_lists(block_generate(den, ids[b: b + 1, : int(plen[b])], plen[b: b + 1], **kw))[0]
             for b in range(len(lens))]
    assert as_lists(batched) == alone
    for s, f in zip(alone, free):  # stopping at EOS is a truncation of the free run
        assert s == (f[: f.index(eos) + 1] if eos in f else f)
    assert batched.stats.lengths == [len(s) for s in alone]


def test_rows_stop_at_different_times():
    """The EOS picked for the batching property really splits a batch (so it tests something)."""
    ids, plen = random_prompts([3, 8, 5, 11], 7)
    den = denoiser(text_bd(), 4, True)
    free = as_lists(block_generate(den, ids, plen, max_new_tokens=16, stop_at_eos=False))
    eos = pick_eos(free, exclude={text_bd().spec.mask_token_id})
    out = block_generate(denoiser(text_bd(), 4, True, eos=eos), ids, plen, max_new_tokens=16)
    assert len(set(out.stats.lengths)) >= 3
    assert any(s[-1] == eos for s in as_lists(out)) and min(out.stats.lengths) < 16
    for s in as_lists(out):
        assert eos not in s[:-1]


def test_finished_rows_stop_costing_compute():
    """Row-forwards shrink once rows are done (select_rows), and one row's EOS does not stop
    the others."""
    ids, plen = random_prompts([4, 4, 4], 8)
    den = denoiser(text_bd(), 4, False)
    free = as_lists(block_generate(den, ids, plen, policy=OneStep(), max_new_tokens=16, stop_at_eos=False))
    eos = pick_eos(free, exclude={text_bd().spec.mask_token_id})
    out = block_generate(denoiser(text_bd(), 4, False, eos=eos), ids, plen, policy=OneStep(), max_new_tokens=16)
    blocks = [-(-n // 4) for n in out.stats.lengths]
    assert out.stats.row_forwards == sum(blocks)
    assert out.stats.nfe_decode == max(blocks)


def test_batched_ar_equals_one_row_at_a_time():
    ids, plen = random_prompts([3, 9, 6], 9)
    bd = text_bd()
    free = as_lists(ar_generate(bd, ids, plen, max_new_tokens=12, stop_at_eos=False))
    eos = pick_eos(free, exclude={bd.spec.mask_token_id})
    bd = variant(bd, 4, False, eos=eos)
    batched = ar_generate(bd, ids, plen, max_new_tokens=12)
    alone = [as_lists(ar_generate(bd, ids[b: b + 1, : int(plen[b])], plen[b: b + 1], max_new_tokens=12))[0]
             for b in range(3)]
    assert as_lists(batched) == alone
    assert len(set(batched.stats.lengths)) >= 2


def test_padded_output():
    ids, plen = random_prompts([3, 5], 10)
    out = block_generate(denoiser(text_bd(), 4, False), ids, plen, max_new_tokens=5, stop_at_eos=False)
    pad = out.padded(-1)
    assert pad.shape == (2, 5) and torch.equal(pad[0], out.sequences[0])
