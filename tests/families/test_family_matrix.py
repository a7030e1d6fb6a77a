"""The family matrix: every registered backbone family, tested the LitGPT way on a tiny random
model built from its own HF config class (see ``tests/families/tiny.py``):

- the wrapper's logits at L=1 equal the family's own ``forward`` (its head and every logit
  transform included), row by row in a right-padded batch;
- RAD equals full duplication (float64);
- the cache modes none ≡ block ≡ fused agree, with the brute-force no-cache reference, multi-step
  and one-step, with and without shift, a batch equal to its rows one at a time;
- the AR baseline equals HF's greedy ``generate``.
"""

import re

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.models.families import REFUSED, registered_families
from blockdistill.sampling import FixedCount, HFDenoiser, OneStep, ar_generate, block_generate
from blockdistill.testing import tiny_tokenizer
from tests.families.tiny import (
    EOS,
    TINY,
    TRANSFORMED,
    VOCAB,
    prompts,
    rad_and_full_dup,
    tiny_bd,
    tiny_model,
)
from tests.sampling.helpers import as_lists, pad_rows, reference_block_decode, variant

FAMILIES = sorted(registered_families())


def test_every_registered_family_has_a_tiny_config():
    assert set(FAMILIES) <= set(TINY), sorted(set(FAMILIES) - set(TINY))
    assert {"gemma3_text", "qwen3_moe", "mixtral", "granite", "starcoder2", "phi", "qwen3", "gpt_neox",
            "cohere"} <= set(FAMILIES)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_wrapper_at_block_size_one_equals_the_familys_own_forward(model_type):
    """Guards: a logit transform HF applies after the head (soft-capping, logits_scaling,
    logit_scale) skipped, a refused attention backend, wrong positions, the decoder bypassing the
    family's embedding scale. Rows of a right-padded batch each equal the model alone."""
    bd = tiny_bd(model_type)
    rows = prompts([9, 5, 12], seed=1)
    ids, lens = pad_rows(rows, EOS)
    with torch.no_grad():
        ours = bd.clean_logits(ids, lens, block_size=1)
        for b, r in enumerate(rows):
            theirs = bd.model(input_ids=torch.tensor([r])).logits[0].float()
            torch.testing.assert_close(ours[b, : len(r)], theirs, atol=1e-6, rtol=0)
        if model_type in TRANSFORMED:  # the transform matters here: the raw head differs
            raw = bd.family.lm_head(bd.model)(bd.model.get_decoder()(input_ids=torch.tensor([rows[0]])).last_hidden_state)
            assert float((raw[0].float() - ours[0, : len(rows[0])]).abs().max()) > 0.05
    assert ours[..., :VOCAB].std() > 0.1


@pytest.mark.parametrize("model_type", FAMILIES)
def test_rad_equals_full_duplication(model_type):
    _, rad, dup = rad_and_full_dup(tiny_bd(model_type), [3, 6], [7, 5])
    assert dup.std() > 0.1
    # float64 model; the logits come back as float32 (bd.logits), so 1e-6 is float32 rounding of
    # logits of scale ~5 (eager's additive masks sum in another order: 2e-7 seen on Gemma-2; 0 elsewhere).
    torch.testing.assert_close(rad, dup, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shift", [False, True], ids=["noshift", "shift"])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_cache_modes_agree_with_the_brute_force_reference(model_type, shift):
    """none ≡ block ≡ fused over three blocks of L=4, multi-step (two per step) and one-step; a
    batch of two prompts of different lengths equals the brute-force one-row reference (the
    training forward on the whole prefix, no cache) for one-step decoding."""
    bd = variant(tiny_bd(model_type), 4, shift)
    rows = prompts([5, 10], seed=4)
    ids, lens = pad_rows(rows, EOS)
    for policy in (FixedCount(2), OneStep()):
        outs = {c: as_lists(block_generate(HFDenoiser(bd), ids, lens, policy=policy, cache=c, max_new_tokens=12,
                                           stop_at_eos=False)) for c in ("none", "block", "fused")}
        assert outs["none"] == outs["block"] == outs["fused"], policy
    for b, r in enumerate(rows):
        ref = reference_block_decode(bd, r, 12, None)
        assert outs["fused"][b] == ref[:12]
    assert len({t for o in outs["fused"] for t in o}) >= 4


@pytest.mark.parametrize("model_type", FAMILIES)
def test_ar_baseline_equals_hf_generate(model_type):
    bd = tiny_bd(model_type)
    rows = prompts([4, 9], seed=5)
    ids, lens = pad_rows(rows, EOS)
    ours = as_lists(ar_generate(bd, ids, lens, max_new_tokens=10))  # stops at EOS, like generate
    for b, r in enumerate(rows):
        t = torch.tensor([r])
        extra = {"mm_token_type_ids": torch.zeros_like(t)} if model_type in ("qwen2_5_vl", "qwen2_vl") else {}
        out = bd.model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=10, do_sample=False,
                                suppress_tokens=[bd.spec.mask_token_id], eos_token_id=EOS, pad_token_id=EOS, **extra)
        assert ours[b] == out[0, len(r):].tolist(), b
    assert len({t for o in ours for t in o}) >= 4


@pytest.mark.parametrize("model_type", ["mamba", "recurrent_gemma"])
def test_families_without_block_attention_are_refused_with_the_reason(model_type):
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1)
    if model_type == "recurrent_gemma":
        kw.update(num_attention_heads=2, lru_width=16, intermediate_size=32, block_types=["recurrent"])
    else:
        kw.update(state_size=4)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kw))
    assert model_type in REFUSED
    with pytest.raises(ValueError, match=f"model_type='{model_type}' cannot be driven as a block-diffusion model: "
                                         + re.escape(REFUSED[model_type])):
        BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(VOCAB), block_size=4)


def test_an_unregistered_family_names_the_registered_ones():
    model = tiny_model("llama")
    model.config.model_type = "made_up"
    with pytest.raises(ValueError, match="no backbone family registered for model_type='made_up'.*'qwen3_moe'"):
        BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(VOCAB), block_size=4)


def test_gemma2_asked_for_sdpa_runs_eager():
    """HF refuses SDPA for Gemma-2 (soft-capped attention scores); the library picks eager with
    additive masks instead of failing, and says so in ``attn_backend``."""
    bd = tiny_bd("gemma2")
    assert bd.attn_backend == "eager" and bd.model.config._attn_implementation == "eager"
    assert tiny_bd("llama").attn_backend == "sdpa"
