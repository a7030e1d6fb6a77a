"""Block decoding: the caches, the policies and the training-time RAD forward agree.

Every equivalence is checked on outputs that are not degenerate (``test_outputs_are_diverse``).
"""

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockdistill.sampling import (
    CACHE_MODES,
    BlockCache,
    CacheStrategy,
    ConfidenceThreshold,
    FixedCount,
    OneStep,
    block_generate,
    register_cache_mode,
)
from tests.sampling.helpers import (
    as_lists,
    denoiser,
    random_prompts,
    reference_block_decode,
    text_bd,
    variant,
)

BLOCKS = st.sampled_from([1, 2, 4, 8])


@settings(max_examples=12)
@given(L=BLOCKS, shift=st.booleans(), lens=st.lists(st.integers(1, 13), min_size=1, max_size=3),
       max_new=st.integers(1, 14), tau=st.sampled_from([None, 0.0, 0.5, 0.85]), seed=st.integers(0, 999))
def test_cache_modes_give_identical_tokens(L, shift, lens, max_new, tau, seed):
    """Every registered cache mode (``CACHE_MODES``, read when the test runs, so a new mode is
    tested by being registered) decodes what the no-cache reference decodes.
    Guards: a stale or uncropped KV cache, a fused pass that lets the previous block see the
    current one (or misses its KV), wrong positions for cached blocks."""
    den = denoiser(text_bd(), L, shift)
    ids, plen = random_prompts(lens, seed)
    policy = OneStep() if tau is None else ConfidenceThreshold(tau)
    assert {"none", "block", "fused"} <= set(CACHE_MODES)
    outs = {c: as_lists(block_generate(den, ids, plen, policy=policy, cache=c, max_new_tokens=max_new,
                                       stop_at_eos=False)) for c in CACHE_MODES}
    for c, out in outs.items():
        assert out == outs["none"], c
    assert all(len(s) == max_new for s in outs["none"])


class DeferredWrite(CacheStrategy):
    """The example of ``blockdistill.sampling.cache``: a block cache that writes each finished
    block in its own pass just before the next block's first forward."""

    name = "deferred"
    writes = 0

    def __init__(self):
        self.pending = None

    def clean_slots(self, run, k, step):
        if self.pending is not None:
            BlockCache().end_block(run, k - 1, self.pending)
            DeferredWrite.writes += 1
            self.pending = None
        return None

    def end_block(self, run, k, block):
        self.pending = block


class Forgetful(CacheStrategy):
    """A broken mode: finished blocks never reach the context."""

    name = "forgetful"


@contextmanager
def registered(cls):
    register_cache_mode(cls)
    try:
        yield
    finally:
        del CACHE_MODES[cls.name]


def test_a_registered_mode_is_checked_by_the_equivalence_test():
    """One new class plus registration: the registry-wide equivalence test runs it; it costs as
    many forwards as the block cache (its write pass merely moved)."""
    DeferredWrite.writes = 0
    with registered(DeferredWrite):
        test_cache_modes_give_identical_tokens()
        ids, plen = random_prompts([5, 9], 7)
        kw = dict(policy=ConfidenceThreshold(0.5), max_new_tokens=11, stop_at_eos=False)
        for shift in (False, True):
            den = denoiser(text_bd(), 4, shift)
            ref = block_generate(den, ids, plen, cache="block", **kw)
            got = block_generate(den, ids, plen, cache="deferred", **kw)
            assert as_lists(got) == as_lists(ref)
            assert got.stats.nfe == ref.stats.nfe
    assert DeferredWrite.writes > 0
    assert "deferred" not in CACHE_MODES


@pytest.mark.parametrize("shift", [False, True])
def test_the_equivalence_test_catches_a_mode_that_loses_blocks(shift):
    """The registry-wide check can fail: a mode that never puts finished blocks into the
    context decodes other tokens than the reference."""
    den = denoiser(text_bd(), 4, shift)
    ids, plen = random_prompts([5, 9, 3], 1)
    kw = dict(policy=OneStep(), max_new_tokens=16, stop_at_eos=False)
    with registered(Forgetful):
        assert as_lists(block_generate(den, ids, plen, cache="forgetful", **kw)) != \
            as_lists(block_generate(den, ids, plen, cache="none", **kw))


@settings(max_examples=8)
@given(L=BLOCKS, shift=st.booleans(), plen=st.integers(1, 11), tau=st.sampled_from([None, 0.7]),
       seed=st.integers(0, 999))
def test_sampler_matches_brute_force_rad_forward(L, shift, plen, tau, seed):
    """Guards the sampler's own slot/position/shift bookkeeping: a no-cache brute force built on
    the training forward (``diffusion_logits``) and a hand-written threshold rule must agree."""
    bd = variant(text_bd(), L, shift)
    ids, lens = random_prompts([plen], seed)
    ref = reference_block_decode(bd, ids[0].tolist(), 10, tau)
    policy = OneStep() if tau is None else ConfidenceThreshold(tau)
    out = block_generate(denoiser(text_bd(), L, shift), ids, lens, policy=policy, cache="fused",
                         max_new_tokens=10, stop_at_eos=False)
    assert as_lists(out)[0] == ref


@settings(max_examples=8)
@given(L=st.sampled_from([2, 4, 8]), shift=st.booleans(), lens=st.lists(st.integers(1, 10), min_size=1, max_size=3),
       seed=st.integers(0, 999))
def test_tau_zero_and_fixed_count_L_equal_one_step(L, shift, lens, seed):
    """With tau=0 every masked position passes at the first step, so multi-step decoding is the
    one-step student; so is committing L tokens per step."""
    den = denoiser(text_bd(), L, shift)
    ids, plen = random_prompts(lens, seed)
    kw = dict(cache="fused", max_new_tokens=12, stop_at_eos=False)
    one = block_generate(den, ids, plen, policy=OneStep(), **kw)
    zero = block_generate(den, ids, plen, policy=ConfidenceThreshold(0.0), **kw)
    fixed = block_generate(den, ids, plen, policy=FixedCount(L), **kw)
    assert as_lists(one) == as_lists(zero) == as_lists(fixed)
    assert zero.stats.nfe == one.stats.nfe


def test_multi_step_differs_from_one_step_somewhere():
    """Otherwise the threshold tests above would not distinguish the two policies."""
    den = denoiser(text_bd(), 4, False)
    ids, plen = random_prompts([5, 9, 3], 1)
    kw = dict(cache="fused", max_new_tokens=16, stop_at_eos=False)
    assert as_lists(block_generate(den, ids, plen, policy=OneStep(), **kw)) != \
        as_lists(block_generate(den, ids, plen, policy=ConfidenceThreshold(0.85), **kw))


def test_outputs_are_diverse():
    """A degenerate random model (copying its input, or decoding [MASK]) would make every
    equivalence above vacuous."""
    for shift in (False, True):
        den = denoiser(text_bd(), 4, shift)
        ids, plen = random_prompts([5, 9, 3, 12], 2)
        out = as_lists(block_generate(den, ids, plen, policy=ConfidenceThreshold(), cache="fused",
                                      max_new_tokens=16, stop_at_eos=False))
        tokens = [t for s in out for t in s]
        assert len(set(tokens)) >= 10
        assert len({tuple(s) for s in out}) == len(out)


def test_shorter_run_is_a_prefix_of_a_longer_one():
    """max_new_tokens truncates whole decoded blocks; it must not change what is decoded."""
    den = denoiser(text_bd(), 4, True)
    ids, plen = random_prompts([6, 3], 3)
    long = as_lists(block_generate(den, ids, plen, max_new_tokens=13, stop_at_eos=False))
    for m in (1, 2, 5, 8):
        short = as_lists(block_generate(den, ids, plen, max_new_tokens=m, stop_at_eos=False))
        assert short == [s[:m] for s in long]


def test_mask_token_is_never_committed():
    """Guards: argmax over a vocabulary that includes [MASK]. The mask logit is made the largest
    everywhere by its LM-head row; the samplers must still never emit it."""
    bd = text_bd()
    head = bd.family.lm_head(bd.model)
    mask = bd.spec.mask_token_id
    saved = head.weight[mask].clone()
    try:
        with torch.no_grad():
            head.weight[mask] = head.weight.abs().max(0).values * 50
        ids, plen = random_prompts([4, 7], 4)
        for shift in (False, True):
            for policy in (OneStep(), ConfidenceThreshold()):
                out = block_generate(denoiser(bd, 4, shift), ids, plen, policy=policy, max_new_tokens=9,
                                     stop_at_eos=False)
                assert all(mask not in s for s in as_lists(out))
    finally:
        with torch.no_grad():
            head.weight[mask] = saved


def test_eager_attention_gives_the_same_tokens():
    """The eager backend takes additive float masks (a boolean mask is misread there)."""
    ids, plen = random_prompts([5, 10], 5)
    outs = []
    for backend in ("sdpa", "eager"):
        bd = variant(text_bd(), 4, False, backend=backend)
        from blockdistill.sampling import HFDenoiser

        outs.append(as_lists(block_generate(HFDenoiser(bd), ids, plen, max_new_tokens=10, stop_at_eos=False)))
    variant(text_bd(), 4, False, backend="sdpa")  # restore the shared model's backend
    assert outs[0] == outs[1]
