"""Tiny random-init backbones and tokenizers for tests and tutorials (no downloads).

Random tiny models with the default ``initializer_range=0.02`` and tied embeddings copy their
input, so every block decodes to one token and equivalence tests prove nothing. These use a
larger init range (0.1 by default); tests should still check that outputs are diverse.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]


def tiny_tokenizer(vocab_size: int = 96):
    """A word-level ``PreTrainedTokenizerFast`` with tokens ``t0..t{k}`` plus Qwen-style specials.

    Total vocabulary is ``vocab_size``; ``<|endoftext|>`` is EOS and pad.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    n_words = vocab_size - len(SPECIALS)
    vocab = {f"t{i}": i for i in range(n_words)}
    for j, s in enumerate(SPECIALS):
        vocab[s] = n_words + j
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="t0")
    fast.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    return fast


def tiny_qwen2(vocab_size: int = 96, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
               num_kv_heads: int = 2, init_range: float = 0.1, max_position_embeddings: int = 512,
               seed: int = 0, **kw: Any) -> nn.Module:
    """A random-init ``Qwen2ForCausalLM`` (untied embeddings, GQA)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      num_key_value_heads=num_kv_heads, max_position_embeddings=max_position_embeddings,
                      initializer_range=init_range, tie_word_embeddings=False, eos_token_id=vocab_size - 7,
                      pad_token_id=vocab_size - 7, **kw)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).eval()


def tiny_qwen2_5_vl(vocab_size: int = 96, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                    num_kv_heads: int = 2, init_range: float = 0.1, patch_size: int = 8,
                    vision_hidden: int = 32, vision_depth: int = 1, seed: int = 0,
                    max_position_embeddings: int = 1024, **kw: Any) -> nn.Module:
    """A random-init ``Qwen2_5_VLForConditionalGeneration`` whose special ids match :func:`tiny_tokenizer`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    base = vocab_size - len(SPECIALS)
    ids = {s: base + j for j, s in enumerate(SPECIALS)}
    head_dim = hidden_size // num_heads
    # M-RoPE sections must sum to head_dim / 2.
    half = head_dim // 2
    t = half - 2 * (half // 3)
    sections = [t, half // 3, half // 3]
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                         num_hidden_layers=num_layers, num_attention_heads=num_heads,
                         num_key_value_heads=num_kv_heads, max_position_embeddings=max_position_embeddings,
                         initializer_range=init_range, rope_scaling={"type": "mrope", "mrope_section": sections},
                         eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None),
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
                           num_heads=2, out_hidden_size=hidden_size, patch_size=patch_size,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=patch_size * 4,
                           fullatt_block_indexes=[0], initializer_range=init_range),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False, initializer_range=init_range, **kw,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def tiny_image_inputs(model: nn.Module, grid_hw: tuple[int, int] = (4, 4), num_images: int = 1, seed: int = 0):
    """Random pixel patches for ``num_images`` images of ``grid_hw`` patches each.

    Returns ``(pixel_values, image_grid_thw, tokens_per_image)``.
    """
    vc = model.config.vision_config
    g = torch.Generator().manual_seed(seed)
    h, w = grid_hw
    dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    pixel_values = torch.randn(num_images * h * w, dim, generator=g)
    thw = torch.tensor([[1, h, w]] * num_images)
    return pixel_values, thw, h * w // vc.spatial_merge_size**2
