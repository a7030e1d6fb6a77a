"""blockdistill's threshold decoding of an SDAR checkpoint equals SDAR's greedy
``block_diffusion_generate``, re-implemented here from its documented semantics.

The reference below recomputes every forward over the whole visible sequence (no cache) with
SDAR's block-causal mask and does what SDAR's loop does, step for step:

- the sequence is the prompt followed by mask tokens up to whole blocks; blocks are aligned to
  index 0; the whole blocks before the prompt's end are context, the next block starts with
  the prompt tail;
- each step proposes ``x0`` = argmax of the logits over the *full* vocabulary (the mask token
  included) with confidence ``softmax(logits)[x0]``; ``top_k=1`` first filters the logits to
  the top one, so every confidence is 1;
- ``low_confidence_dynamic``: with quota ``q`` for the step (block size spread over the steps),
  commit every masked position above the threshold if at least ``q`` are, else ``torch.topk``
  of ``q`` over the masked confidences (others at -inf);
- after each block, stop if any stop id appears in the generated part.

Guards against a sampler that drifts from SDAR's semantics on the points docs/serving.md says
are matched (threshold rule, quota per step, block alignment, prompt tail, stopping).
"""

from __future__ import annotations

import pytest
import torch

from blockdistill.interop import SDARConfidence, SDARThreshold, load_sdar, sdar_transfer_counts
from blockdistill.sampling import HFDenoiser, block_generate
from blockdistill.sampling.policies import ConfidenceThreshold, OneStep
from tests.interop.helpers import write_sdar_checkpoint


@torch.no_grad()
def sdar_greedy_reference(model, prompt: torch.Tensor, mask_id: int, *, gen_length: int, block_length: int,
                          steps: int, threshold: float, top_k: int = 0, stop_ids=()):
    """SDAR's loop for one prompt (1-D long). Returns (generated ids, overwrote, mask_argmax):
    ``overwrote`` is True when SDAR's topk re-committed an already decoded position with a
    different token, ``mask_argmax`` when the mask token was the argmax somewhere."""
    L, P = block_length, prompt.shape[0]
    n_blocks = -(-(P + gen_length) // L)
    x = torch.full((n_blocks * L,), mask_id, dtype=torch.long)
    x[:P] = prompt
    quota = sdar_transfer_counts(L, steps)
    blk = torch.arange(n_blocks * L) // L
    overwrote = mask_argmax = False
    for k in range(P // L, n_blocks):
        end = (k + 1) * L
        allowed = blk[:end, None] >= blk[None, :end]
        bias = torch.zeros(end, end).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
        for step in range(steps + 1):
            cur = x[k * L:end]
            masked = cur == mask_id
            if not masked.any():
                break
            logits = model(input_ids=x[None, :end], attention_mask=bias,
                           position_ids=torch.arange(end)[None]).logits[0, k * L:end].float()
            if top_k == 1:
                x0 = logits.argmax(-1)
                p = torch.ones(L)
            else:
                probs = torch.softmax(logits, -1)
                x0 = probs.argmax(-1)
                p = probs.gather(-1, x0[:, None])[:, 0]
            mask_argmax |= bool((x0[masked] == mask_id).any())
            conf = torch.where(masked, p, torch.tensor(float("-inf")))
            high = conf > threshold
            if int(high.sum()) >= quota[step]:
                transfer = high
            else:
                transfer = torch.zeros(L, dtype=torch.bool)
                transfer[torch.topk(conf, quota[step]).indices] = True
            overwrote |= bool((transfer & ~masked & (x0 != cur)).any())
            cur[transfer] = x0[transfer]
        if any(bool((x[P:end] == s).any()) for s in stop_ids):
            break
    return x[P:], overwrote, mask_argmax


def _prompts(n: int, seed: int = 0, lens=(3, 4, 6, 9, 1, 7)):
    g = torch.Generator().manual_seed(seed)
    lens = list(lens)[:n]
    return [torch.randint(0, 80, (p,), generator=g) for p in lens]


def _batch(prompts):
    width = max(p.shape[0] for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, :p.shape[0]] = p
    return ids, torch.tensor([p.shape[0] for p in prompts])


@pytest.fixture(scope="module")
def sdar(tmp_path_factory):
    path = tmp_path_factory.mktemp("sdar") / "ckpt"
    write_sdar_checkpoint(path, block_size=4, seed=5)
    bd = load_sdar(path)[0]
    # A trained SDAR model never proposes <|MASK|>; a random one often does. A zero head row gives
    # the mask logit 0, below the best of 96 random logits, yet leaves it real softmax mass.
    with torch.no_grad():
        bd.model.lm_head.weight[bd.spec.mask_token_id] = 0
    return bd


@pytest.mark.parametrize("tau", [0.05, 0.2, 0.9])
@pytest.mark.parametrize("cache", ["fused", "none"])
def test_threshold_policy_equals_sdar_greedy_loop(sdar, tau, cache) -> None:
    prompts = _prompts(6)
    ids, lens = _batch(prompts)
    eos = sdar.spec.eos_token_id
    out = block_generate(SDARConfidence(HFDenoiser(sdar)), ids, lens, policy=ConfidenceThreshold(tau),
                         cache=cache, max_new_tokens=14)
    for p, got in zip(prompts, out.sequences):
        ref, overwrote, mask_top = sdar_greedy_reference(sdar.model, p, sdar.spec.mask_token_id, gen_length=14,
                                                         block_length=4, steps=4, threshold=tau, stop_ids=[eos])
        assert not mask_top and not overwrote  # preconditions: the documented differences do not arise
        assert torch.equal(got, ref[:got.shape[0]])
        if got.shape[0] < 14:  # stopped early: it must be at SDAR's EOS, in the block where SDAR stopped
            assert got[-1] == eos
    assert len(set(torch.cat(out.sequences).tolist())) > 5
    one = block_generate(HFDenoiser(sdar), ids, lens, policy=OneStep(), cache=cache, max_new_tokens=14)
    if tau >= 0.2:  # the threshold really left blocks to several steps
        assert out.stats.nfe_decode > one.stats.nfe_decode


def test_sdar_confidence_is_the_full_softmax_probability(sdar) -> None:
    """The documented difference, and its option: blockdistill's own confidence leaves the mask
    token's mass out of the softmax (p_top / (1 - p_mask)); through SDARConfidence the sampler's
    proposal rule yields SDAR's p_top of the full softmax, with the same argmax."""
    from blockdistill.sampling.policies import proposals

    ids, lens = _batch(_prompts(3))
    den = HFDenoiser(sdar)
    state, _ = den.prefill(ids, lens)
    q = torch.full((3, 4), sdar.spec.mask_token_id)
    index = torch.arange(4)[None] + (lens // 4 * 4)[:, None]
    raw = den.forward(state, q, index, 0, torch.arange(4).expand(3, 4))
    state, _ = den.prefill(ids, lens)
    wrapped = SDARConfidence(den).forward(state, q, index, 0, torch.arange(4).expand(3, 4))
    full = torch.softmax(raw, -1)
    tok_own, conf_own = proposals(raw.clone(), sdar.spec.mask_token_id, True)
    tok_sdar, conf_sdar = proposals(wrapped, sdar.spec.mask_token_id, True)
    assert torch.equal(tok_own, tok_sdar) and bool((tok_own != sdar.spec.mask_token_id).all())
    assert torch.allclose(conf_sdar, full.gather(-1, tok_own[..., None])[..., 0], atol=1e-6)
    p_mask = full[..., sdar.spec.mask_token_id]
    assert torch.allclose(conf_own, conf_sdar / (1 - p_mask), atol=1e-6)
    assert bool((conf_own > conf_sdar).all())


@pytest.mark.parametrize("steps,static,tau", [(2, False, 0.9), (2, True, 1.0), (1, False, 0.2), (3, False, 0.2)])
def test_sdar_quota_policy_equals_sdar_loop_with_fewer_steps(sdar, steps, static, tau) -> None:
    # Prompts of whole blocks: a first block with a prompt tail may hold fewer masks than the first
    # quota, where SDAR re-commits a decoded (even a prompt) position (the next test).
    prompts = _prompts(6, lens=(4, 8, 12, 16, 4, 8))
    ids, lens = _batch(prompts)
    out = block_generate(SDARConfidence(HFDenoiser(sdar)), ids, lens, policy=SDARThreshold(4, steps, tau, static),
                         max_new_tokens=14, stop_at_eos=False)
    for p, got in zip(prompts, out.sequences):
        ref, overwrote, mask_top = sdar_greedy_reference(sdar.model, p, sdar.spec.mask_token_id, gen_length=14,
                                                         block_length=4, steps=steps, threshold=tau)
        assert not (overwrote or mask_top)
        assert torch.equal(got, ref[:14])
    if steps == 1:  # one forward per block
        one = block_generate(HFDenoiser(sdar), ids, lens, policy=OneStep(), max_new_tokens=14, stop_at_eos=False)
        assert out.stats.nfe_decode == one.stats.nfe_decode


def test_sdar_topk_recommits_decoded_positions_when_the_quota_exceeds_the_masks(sdar) -> None:
    """The documented difference SDARThreshold does not copy: with quotas [2, 2] (L=4, 2 steps) a
    step that finds fewer masks than its quota (a first block holding 3 prompt tokens, or a first
    step that committed 3) has SDAR's topk re-commit a decoded position, prompt tokens included,
    with its current argmax. blockdistill commits only masked positions."""
    overwrites = 0
    for p in _prompts(6, lens=(3, 7, 11, 3, 7, 11)):
        _, overwrote, _ = sdar_greedy_reference(sdar.model, p, sdar.spec.mask_token_id, gen_length=14,
                                                block_length=4, steps=2, threshold=0.2)
        overwrites += overwrote
    assert overwrites > 0


def test_top_k_one_greedy_is_one_step_per_block(sdar) -> None:
    """SDAR's script made greedy with ``top_k=1`` has confidence 1 everywhere, so any threshold
    below 1 commits the whole block at once: blockdistill's OneStep policy."""
    prompts = _prompts(4, seed=3)
    ids, lens = _batch(prompts)
    out = block_generate(HFDenoiser(sdar), ids, lens, policy=OneStep(), max_new_tokens=12, stop_at_eos=False)
    for p, got in zip(prompts, out.sequences):
        ref, _, mask_top = sdar_greedy_reference(sdar.model, p, sdar.spec.mask_token_id, gen_length=12,
                                                 block_length=4, steps=4, threshold=0.85, top_k=1)
        assert not mask_top
        assert torch.equal(got, ref[:12])
