"""Tiny checkpoints written by hand in SDAR's and ECHO's layouts (independent of the exporter).

Each one ships a ``modeling_*.py`` named by ``auto_map`` that raises on import: a loader that
executed remote code would fail loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from blockdistill.testing import tiny_tokenizer

MASK = "<|MASK|>"
TRAP = "raise RuntimeError('remote code was executed')\n"


def sdar_tokenizer():
    """The tiny tokenizer (96 ids) plus ``<|MASK|>`` as id 96, SDAR-style."""
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": [MASK]}, replace_extra_special_tokens=False)
    tok.mask_token = MASK
    return tok


def tiny_qwen3(vocab_size: int = 97, hidden_size: int = 64, layers: int = 2, seed: int = 0, tie: bool = False):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=256, initializer_range=0.1, tie_word_embeddings=tie,
                      rope_theta=10000.0)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg).eval()


def write_sdar_checkpoint(out: Path, *, block_size: int | None = 4, mask_in_config: bool = True, seed: int = 0,
                          tie: bool = False, extra: dict | None = None, drop: tuple[str, ...] = ()):
    """An SDAR-layout checkpoint: Qwen3 weight names, ``model_type: sdar``, ``auto_map`` to a trap."""
    tok = sdar_tokenizer()
    model = tiny_qwen3(seed=seed, tie=tie)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if tie:
        state.pop("lm_head.weight", None)
    for k in drop:
        state.pop(k)
    state.update(extra or {})
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    c = model.config
    cfg = {
        "architectures": ["SDARForCausalLM"], "model_type": "sdar",
        "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig", "AutoModel": "modeling_sdar.SDARModel",
                     "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"},
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.head_dim, "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": tie, "torch_dtype": "float32", "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": 28, "fuse_cross_entropy": True, "bos_token_id": None,
        "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id, "transformers_version": "4.52.4",
    }
    if block_size is not None:
        cfg["block_size"] = block_size
    if mask_in_config:
        cfg["mask_token_id"] = tok.convert_tokens_to_ids(MASK)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in ("modeling_sdar.py", "configuration_sdar.py"):
        (out / f).write_text(TRAP)
    tok.save_pretrained(out)
    return model, tok


def legacy_vl_state_dict(model) -> dict[str, torch.Tensor]:
    """A Qwen2.5-VL state dict under the names transformers 4.5x wrote (``model.layers.*``,
    ``visual.*``), as the released ECHO checkpoints store them."""
    legacy = {}
    for k, v in model.state_dict().items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            k = "visual." + k[len("model.visual."):]
        legacy[k] = v.contiguous()
    return legacy


def write_echo_checkpoint(out: Path, *, mask_in_tokenizer: bool = True, mask_in_config: bool = False, seed: int = 0):
    """A checkpoint saved the way ECHO saves its own: Qwen2.5-VL weights under the names
    transformers 4.5x writes (``model.layers.*``, ``visual.*``), ``auto_map`` naming remote code,
    ``<|MASK|>`` in the tokenizer and/or ``mask_token_id`` in the config, no block size."""
    from blockdistill.testing import tiny_qwen2_5_vl

    tok = sdar_tokenizer() if mask_in_tokenizer else tiny_tokenizer()
    model = tiny_qwen2_5_vl(seed=seed)
    model.resize_token_embeddings(97, mean_resizing=False)
    out.mkdir(parents=True, exist_ok=True)
    legacy = legacy_vl_state_dict(model)
    save_file(legacy, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.update(architectures=["EchoForConditionalGeneration"],
               auto_map={"AutoModelForImageTextToText": "modeling_echo.EchoForConditionalGeneration"})
    if mask_in_config:
        cfg["mask_token_id"] = 96
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "modeling_echo.py").write_text(TRAP)
    tok.save_pretrained(out)
    return model, tok
