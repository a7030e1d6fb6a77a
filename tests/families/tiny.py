"""A tiny random model of every registered backbone family, built from its HF config class.

2 layers, hidden 32, vocabulary 96 (the ids of :func:`blockdistill.testing.tiny_tokenizer`),
init range 0.2 (random tiny models with the default 0.02 copy their input; at 0.1 tiny Qwen2 still does), float64 so that
equivalence tests compare exact argmax decisions. Transform knobs (soft-capping, logit
scaling) are set far from neutral so that a library that skips them fails the tests.
"""

from __future__ import annotations

from functools import cache

import torch

from blockdistill import BlockDiffusionLM
from blockdistill.testing import tiny_qwen2_5_vl, tiny_tokenizer
from tests.foundation.helpers import all_response_targets, collate, random_examples, random_mask

VOCAB, EOS = 96, 89
WORDS = 80
"""Ordinary tokens of :func:`blockdistill.testing.tiny_tokenizer` (ids below the special ones)."""
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
              tie_word_embeddings=False, eos_token_id=EOS, pad_token_id=EOS, bos_token_id=None)
MOE = dict(experts_implementation="eager")  # HF's grouped_mm kernels take no float64

TINY: dict[str, dict] = {
    "qwen2": {}, "qwen3": {}, "llama": {}, "mistral": {}, "phi3": {}, "olmo2": {}, "starcoder2": {},
    "phi": {}, "gpt_neox": {},
    "gemma": dict(head_dim=8),
    "gemma2": dict(head_dim=8, final_logit_softcapping=1.0, attn_logit_softcapping=1.0, sliding_window=512),
    "gemma3_text": dict(head_dim=8, final_logit_softcapping=1.0, sliding_window=512),
    "granite": dict(logits_scaling=4.0, embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.3),
    "cohere": dict(logit_scale=0.25),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_5_vl": {}, "qwen2_vl": {},
}
"""Extra config fields per ``model_type``; every registered type must have an entry."""

TRANSFORMED = ("gemma2", "gemma3_text", "granite", "cohere")
"""Families whose forward transforms the LM head's output."""


def tiny_model(model_type: str, **overrides):
    """A random-init HF model of ``model_type`` (eval mode, float64)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_type == "qwen2_5_vl":
        return tiny_qwen2_5_vl(hidden_size=32, **overrides).eval().double()
    if model_type == "qwen2_vl":
        return _tiny_qwen2_vl().eval().double()
    kw = {**COMMON, **TINY[model_type], **overrides}
    extra = MOE if model_type in ("qwen3_moe", "mixtral") else {}
    cfg = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, **extra).eval().double()


def _tiny_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    vl = tiny_qwen2_5_vl(hidden_size=32).config
    text = {k: v for k, v in vl.text_config.to_dict().items() if k not in ("model_type", "architectures")}
    cfg = Qwen2VLConfig(text_config=text,
                        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
                                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2,
                                           initializer_range=0.1),
                        image_token_id=vl.image_token_id, video_token_id=vl.video_token_id,
                        vision_start_token_id=vl.vision_start_token_id, vision_end_token_id=vl.vision_end_token_id,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(cfg)


@cache
def tiny_bd(model_type: str) -> BlockDiffusionLM:
    """The tiny model wrapped at L=4 (no shift); tests take variants of it."""
    return BlockDiffusionLM.from_causal_lm(tiny_model(model_type), tiny_tokenizer(VOCAB), block_size=4)


def prompts(lens, seed=0) -> list[list[int]]:
    """Random prompts of ordinary tokens, one per length in ``lens``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, WORDS, (n,), generator=g).tolist() for n in lens]


def rad_and_full_dup(bd: BlockDiffusionLM, prompt_lens, response_lens, seed: int = 2):
    """The RAD-vs-duplication setup: a collated batch of random examples (``seed``), a random mask
    (``seed + 1``) and every response slot as a target. Returns ``(args, rad, dup)``: the
    ``diffusion_logits`` arguments and its logits under the RAD layout and under full
    duplication, computed once each (no grad)."""
    batch = collate(bd, random_examples(prompt_lens, response_lens, vocab=WORDS, seed=seed))
    args = (batch.input_ids, batch.prompt_lens, batch.seq_lens, random_mask(batch, seed=seed + 1),
            all_response_targets(batch))
    with torch.no_grad():
        return args, bd.diffusion_logits(*args), bd.diffusion_logits(*args, layout="full_dup")
