"""Backbone wiring for ECHO: Lingshu-7B (a Qwen2.5-VL-7B) from a user path, or a tiny Qwen2.5-VL.

Both are the real ``Qwen2_5_VLForConditionalGeneration`` architecture, so the CPU demo runs the
same code path as the 7B model; only the sizes differ. The vision encoder and projector
("merger") are frozen in stages 2 and 3, as in the paper.

Usage::

    model = build_backbone(BackboneConfig(kind="tiny"), special_token_ids(tokenizer), len(tokenizer))
    model = build_backbone(BackboneConfig(kind="pretrained", pretrained="/models/Lingshu-7B"), ...)
    freeze_vision(model)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from blockdistill.config import ConfigError

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BackboneConfig:
    """Which Qwen2.5-VL to build."""

    kind: str = "tiny"
    """``tiny`` (random init from the sizes below) or ``pretrained`` (weights from ``pretrained``)."""
    pretrained: str | None = None
    """Local directory (or hub id, where the user has network) of Lingshu-7B or any Qwen2.5-VL checkpoint."""
    dtype: str = "float32"
    """``float32`` on CPU; ``bfloat16`` for Lingshu-7B on GPUs."""
    mask_token: str = "[MASK]"
    """Text of the mask token added to the tokenizer for block diffusion (the released ECHO models use
    ``<|MASK|>``; a tokenizer that already has it keeps its id)."""
    hidden_size: int = 128
    """Tiny: text hidden size."""
    num_layers: int = 4
    """Tiny: text decoder layers."""
    num_heads: int = 4
    """Tiny: attention heads."""
    num_kv_heads: int = 2
    """Tiny: key/value heads (GQA)."""
    intermediate_size: int = 384
    """Tiny: MLP width."""
    vision_depth: int = 2
    """Tiny: vision transformer blocks."""
    vision_hidden: int = 96
    """Tiny: vision width."""
    vision_heads: int = 4
    """Tiny: vision attention heads."""
    patch_size: int = 8
    """Tiny: vision patch size (64 px images -> 8x8 patches -> 16 image tokens after 2x2 merging)."""
    init_range: float = 0.05
    """Tiny: initializer range."""
    max_position_embeddings: int = 1024
    """Tiny: context length."""

    def __post_init__(self) -> None:
        if self.kind not in ("tiny", "pretrained"):
            raise ConfigError(f"model.kind: must be 'tiny' or 'pretrained', got {self.kind!r}")
        if self.kind == "pretrained" and not self.pretrained:
            raise ConfigError("model.pretrained: required when model.kind=pretrained (path to Lingshu-7B)")
        if not self.mask_token:
            raise ConfigError("model.mask_token: must be a non-empty string")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"model.dtype: must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model.hidden_size: {self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if (self.hidden_size // self.num_heads) % 4:
            raise ConfigError("model.hidden_size: head dim must be a multiple of 4 for M-RoPE sections")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"model.num_kv_heads: {self.num_kv_heads} does not divide num_heads={self.num_heads}")


def tiny_config(cfg: BackboneConfig, special_ids, vocab_size: int):
    """A ``Qwen2_5_VLConfig`` of the tiny sizes whose special ids match the tokenizer."""
    from transformers import Qwen2_5_VLConfig

    half = cfg.hidden_size // cfg.num_heads // 2
    sections = [half - 2 * (half // 4), half // 4, half // 4]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
            rope_scaling={"type": "mrope", "mrope_section": sections}, initializer_range=cfg.init_range,
            eos_token_id=special_ids.eos_token_id, pad_token_id=special_ids.pad_token_id, bos_token_id=None,
        ),
        vision_config=dict(
            depth=cfg.vision_depth, hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 2,
            num_heads=cfg.vision_heads, out_hidden_size=cfg.hidden_size, patch_size=cfg.patch_size,
            spatial_merge_size=2, temporal_patch_size=2, window_size=cfg.patch_size * 8,
            fullatt_block_indexes=list(range(cfg.vision_depth)), initializer_range=cfg.init_range,
        ),
        tie_word_embeddings=True, initializer_range=cfg.init_range, **special_ids.config_kwargs(),
    )


def build_backbone(cfg: BackboneConfig, special_ids=None, vocab_size: int | None = None, seed: int = 0) -> nn.Module:
    """The stage-1 starting point: tiny random init, or the user's checkpoint."""
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

    if cfg.kind == "pretrained":
        path = cfg.pretrained
        # A hub id looks like "namespace/name"; anything else (absolute, relative, existing) is a local path.
        hub_id = path.count("/") == 1 and not path.startswith((".", "/", "~")) and not Path(path).exists()
        if not hub_id and not Path(path).expanduser().is_dir():
            raise FileNotFoundError(
                f"model.pretrained={path!r} is not a directory. Download Lingshu-7B (or another Qwen2.5-VL "
                "checkpoint) yourself and pass its local path; nothing is fetched at run time here.")
        # Never remote code: Qwen2.5-VL is native to transformers; a checkpoint saved the ECHO way
        # (auto_map) loads through blockdistill.interop.load_released instead.
        return AutoModelForImageTextToText.from_pretrained(path, dtype=_DTYPES[cfg.dtype], trust_remote_code=False)
    if special_ids is None or vocab_size is None:
        raise ValueError("a tiny backbone needs the tokenizer's special ids and vocabulary size")
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(cfg, special_ids, vocab_size))
    return model.to(_DTYPES[cfg.dtype])


def vision_modules(model: nn.Module) -> nn.Module:
    """The vision encoder including its projector (``visual.merger``)."""
    return model.model.visual


def freeze_vision(model: nn.Module) -> int:
    """Freeze the vision encoder and projector; returns the number of frozen parameters."""
    n = 0
    for p in vision_modules(model).parameters():
        p.requires_grad_(False)
        n += p.numel()
    return n
