"""Sampling as the block sampler's proposal rule: temperature 0 is exactly greedy, a batch with one
generator per row decodes what each row decodes alone, the draws follow transformers' warpers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from blockdistill.sampling import GREEDY, ConfidenceThreshold, OneStep, Sampled, block_generate
from blockdistill.sampling.generate import generate
from blockdistill.sampling.proposal import filter_logits
from tests.sampling.helpers import denoiser, random_prompts, text_bd, variant

POLICIES = {"threshold": lambda: ConfidenceThreshold(0.3), "one_step": OneStep, "ar": None}


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _run(bd, ids, lens, policy, cache, **kw):
    mask = (torch.arange(ids.shape[1])[None] < lens[:, None]).long()
    p = "ar" if policy == "ar" else POLICIES[policy]()
    return generate(bd, ids, mask, policy=p, cache=cache, max_new_tokens=10, **kw)


@settings(max_examples=12, deadline=None)
@given(L=st.sampled_from([1, 2, 4]), shift=st.booleans(), lens=st.lists(st.integers(1, 9), min_size=1, max_size=3),
       cache=st.sampled_from(["none", "block", "fused"]), policy=st.sampled_from(sorted(POLICIES)),
       top_k=st.one_of(st.none(), st.integers(1, 50)), top_p=st.one_of(st.none(), st.floats(0.05, 1.0)),
       seed=st.integers(0, 999))
def test_temperature_zero_is_exactly_greedy(L, shift, lens, cache, policy, top_k, top_p, seed):
    """Whatever else is passed (top_k, top_p, generators), temperature 0 decodes the greedy tokens
    with the greedy forward counts, and draws nothing from the generators."""
    bd = variant(text_bd(), L, shift)
    ids, plen = random_prompts(lens, seed)
    greedy = _run(bd, ids, plen, policy, cache)
    gens = _gens(range(len(lens)))
    zero = _run(bd, ids, plen, policy, cache, temperature=0.0, top_k=top_k, top_p=top_p, generator=gens)
    assert [g.tolist() for g in zero.generated] == [g.tolist() for g in greedy.generated]
    assert zero.row_forwards == greedy.row_forwards and zero.stats.nfe == greedy.stats.nfe
    assert all(torch.equal(g.get_state(), f.get_state()) for g, f in zip(gens, _gens(range(len(lens)))))


@settings(max_examples=12, deadline=None)
@given(L=st.sampled_from([1, 2, 4]), shift=st.booleans(), lens=st.lists(st.integers(1, 9), min_size=2, max_size=4),
       cache=st.sampled_from(["none", "block", "fused"]), policy=st.sampled_from(sorted(POLICIES)),
       temperature=st.floats(0.5, 2.0), top_k=st.one_of(st.none(), st.integers(2, 60)),
       top_p=st.one_of(st.none(), st.floats(0.5, 1.0)), seed=st.integers(0, 999))
def test_batch_with_per_row_generators_equals_each_row_alone(L, shift, lens, cache, policy, temperature, top_k,
                                                              top_p, seed):
    """Rows at different prompt lengths, leaving the batch at different blocks (an EOS is among the
    sampled tokens), still draw exactly what they draw alone; every cache mode draws the same."""
    bd = variant(text_bd(), L, shift, eos=5)
    ids, plen = random_prompts(lens, seed)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    seeds = [seed * 7 + b for b in range(len(lens))]
    batched = _run(bd, ids, plen, policy, cache, generator=_gens(seeds), **kw)
    for b, n in enumerate(plen.tolist()):
        alone = _run(bd, ids[b: b + 1, :n], plen[b: b + 1], policy, cache, generator=_gens(seeds[b: b + 1]), **kw)
        assert alone.generated[0].tolist() == batched.generated[b].tolist()
    other = "none" if cache != "none" else "fused"
    again = _run(bd, ids, plen, policy, other, generator=_gens(seeds), **kw)
    assert [g.tolist() for g in again.generated] == [g.tolist() for g in batched.generated]


def test_sampling_samples_and_a_seed_reproduces():
    """The properties above compare like with like; here draws really differ between seeds, a seed
    reproduces its run, and top_k=1 is the greedy argmax again."""
    bd = variant(text_bd(), 4, False)
    ids, plen = random_prompts([5], 3)
    runs = {s: generate(bd, ids, temperature=1.5, seed=s, max_new_tokens=16, policy="one_step").generated[0].tolist()
            for s in range(6)}
    assert len({tuple(r) for r in runs.values()}) >= 5
    assert generate(bd, ids, temperature=1.5, seed=2, max_new_tokens=16, policy="one_step").generated[0].tolist() \
        == runs[2]
    greedy = generate(bd, ids, max_new_tokens=16, policy="one_step").generated[0].tolist()
    assert generate(bd, ids, temperature=1.5, top_k=1, seed=0, max_new_tokens=16,
                    policy="one_step").generated[0].tolist() == greedy
    assert greedy not in runs.values()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8),
                                                    (0.9, 8, 0.6), (1.0, 3, 1.0)])
def test_filter_matches_transformers_warpers(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, generator=g, dtype=torch.float64) * 2
    ref = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k is not None:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p is not None and top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    ours = filter_logits(logits.clone(), temperature, top_k, top_p)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    assert torch.allclose(ours[~torch.isinf(ours)], ref[~torch.isinf(ref)])


def test_draws_follow_the_cut_distribution_and_confidence_is_their_probability():
    """Empirical frequencies of many slots drawn at once match softmax(logits / T) cut to top_k (the
    mask token never drawn), and the confidence is the drawn token's probability under it."""
    V, n, mask_id = 12, 40000, 3
    logits = torch.linspace(-1.0, 1.5, V, dtype=torch.float64)
    rule = Sampled(0.8, top_k=6, generators=_gens([11]))
    tok, conf = rule(logits.expand(1, n, V).clone(), mask_id, True, torch.ones(1, n, dtype=torch.bool),
                     torch.tensor([0]))
    cut = logits.clone()
    cut[mask_id] = float("-inf")
    p = torch.softmax(TopKLogitsWarper(6)(None, (cut / 0.8)[None])[0], -1)
    freq = torch.bincount(tok[0], minlength=V).double() / n
    assert freq[mask_id] == 0 and (freq[p == 0] == 0).all()
    assert (freq - p).abs().max() < 4 * (p * (1 - p) / n).sqrt().max() + 1e-12
    assert torch.allclose(conf[0].double(), p[tok[0]], atol=1e-6)


def test_rows_without_candidates_draw_nothing():
    """A row whose block is finished consumes no random numbers (what keeps batch == rows alone)."""
    gens = _gens([1, 2])
    rule = Sampled(1.0, generators=gens)
    cand = torch.tensor([[True, False, True], [False, False, False]])
    u = rule.uniforms(cand, torch.tensor([0, 1]))
    assert u[1].eq(0).all() and torch.equal(gens[1].get_state(), _gens([2])[0].get_state())
    assert torch.equal(u[0, [0, 2]], torch.rand(2, generator=_gens([1])[0], dtype=torch.float64))


def test_block_generate_default_proposal_is_greedy():
    ids, plen = random_prompts([4, 7], 5)
    den = denoiser(text_bd(), 4, True)
    a = block_generate(den, ids, plen, max_new_tokens=8)
    b = block_generate(den, ids, plen, max_new_tokens=8, proposal=GREEDY)
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Sampled(0.0)
