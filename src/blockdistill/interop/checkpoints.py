"""Load block-diffusion checkpoints released by others, without running their code.

Released block-diffusion models (SDAR, ECHO) ship a ``config.json`` whose ``auto_map`` names
their own Python files, so ``transformers`` would load them only with ``trust_remote_code``.
Their weights, though, are in a stock layout (Qwen3 for SDAR, Qwen2.5-VL for ECHO). This module
reads the config as JSON, drops ``auto_map`` (never imported, never executed), builds the stock
``transformers`` config and model class, loads the weights with a strict name check, and wraps
the result as a :class:`~blockdistill.models.adapter.BlockDiffusionLM` with the block rules the
checkpoint states (or the user states where it states none).

Example::

    bd, tok = load_released("ckpts/ECHO", block_size=8)           # a Qwen2.5-VL layout
    bd, tok = load_released("ckpts/SDAR-1.7B-Chat")                # SDAR: block size from config
    bd.save_pretrained("runs/sdar_native", tokenizer=tok)         # now a plain blockdistill model
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blockdistill.models.adapter import CONFIG_KEY, BlockDiffusionLM, BlockSpec
from blockdistill.models.provenance import mark_trained
from blockdistill.utils.checksum import verify_model_dir

__all__ = ["MASK_TOKEN", "CheckpointError", "ReleasedCheckpoint", "load_released", "read_checkpoint_config"]

MASK_TOKEN = "<|MASK|>"
"""The mask token's text in SDAR's and ECHO's tokenizers."""

SDAR_TYPES = {"sdar": "qwen3", "sdar_moe": "qwen3_moe"}
"""SDAR's ``model_type`` values and the stock ``transformers`` architecture of their weights."""

SDAR_ONLY_KEYS = ("block_size", "mask_token_id", "fuse_cross_entropy")
"""Config keys SDAR adds to a Qwen3 config (read here, not passed to the stock config)."""

_DROPPED_KEYS = ("auto_map", "architectures", "model_type", "transformers_version", CONFIG_KEY)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded as asked. The message names the file, key or setting."""


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """What :func:`read_checkpoint_config` found in a checkpoint's ``config.json``."""

    path: Path
    source_type: str
    """``model_type`` as written (e.g. ``sdar``, ``qwen2_5_vl``)."""
    stock_type: str
    """The ``transformers`` architecture its weights load into (e.g. ``qwen3``)."""
    config: dict[str, Any]
    """The config as a plain dict, without ``auto_map``, SDAR's own keys and bookkeeping."""
    block_size: int | None
    """Block size stated by the checkpoint (SDAR's ``block_size``; None for ECHO)."""
    mask_token_id: int | None
    """``mask_token_id`` stated by the config (None when only the tokenizer has it)."""
    remote_code: dict[str, str] | None
    """The ignored ``auto_map`` (kept for the record; never imported)."""


def read_checkpoint_config(path: str | os.PathLike) -> ReleasedCheckpoint:
    """Parse ``path/config.json`` as JSON only: nothing named in it is imported."""
    from transformers import CONFIG_MAPPING

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} does not exist: not a Hugging Face checkpoint directory")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
    source = raw.get("model_type")
    if not isinstance(source, str):
        raise CheckpointError(f"{cfg_file} has no model_type")
    stock = SDAR_TYPES.get(source, source)
    if stock not in CONFIG_MAPPING:
        raise CheckpointError(
            f"{cfg_file}: model_type={source!r} is not an architecture transformers ships, so its weights "
            f"cannot be loaded without the checkpoint's own code (auto_map={raw.get('auto_map')}); "
            f"supported here: the stock types and {sorted(SDAR_TYPES)}")
    config = {k: v for k, v in raw.items() if k not in _DROPPED_KEYS}
    block = mask = None
    if source in SDAR_TYPES:
        block = config.pop("block_size", None)
        mask = config.pop("mask_token_id", None)
        for k in SDAR_ONLY_KEYS:
            config.pop(k, None)
    elif "mask_token_id" in config:
        mask = config.pop("mask_token_id")
    for name, v in (("block_size", block), ("mask_token_id", mask)):
        if v is not None and (not isinstance(v, int) or v < (1 if name == "block_size" else 0)):
            raise CheckpointError(f"{cfg_file}: {name}={v!r} is not a valid value")
    return ReleasedCheckpoint(path, source, stock, config, block, mask, raw.get("auto_map"))


def _stock_config(ckpt: ReleasedCheckpoint, dtype: torch.dtype):
    from transformers import CONFIG_MAPPING

    cfg = CONFIG_MAPPING[ckpt.stock_type](**ckpt.config)
    cfg.dtype = dtype
    return cfg


def _model_class(config: Any):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    auto = AutoModelForImageTextToText if hasattr(config, "vision_config") else AutoModelForCausalLM
    return auto._model_mapping[type(config)]


def _describe(keys: set[str] | list[str], limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_stock_model(ckpt: ReleasedCheckpoint, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The checkpoint's weights in the stock ``transformers`` model, every name checked.

    ``transformers`` applies its own renames for older layouts of the same architecture (e.g.
    Qwen2.5-VL saved by transformers 4.5x: ``visual.*``, ``model.layers.*``). Anything still
    unmapped, missing or of the wrong shape raises :class:`CheckpointError` listing it.
    """
    if not any(ckpt.path.glob("*.safetensors")):
        raise CheckpointError(f"{ckpt.path} holds no *.safetensors weights (pickled weights are not loaded here)")
    verify_model_dir(ckpt.path)  # a directory saved by blockdistill carries a manifest; released ones do not
    config = _stock_config(ckpt, dtype)
    cls = _model_class(config)
    model, info = cls.from_pretrained(ckpt.path, config=config, dtype=dtype, output_loading_info=True,
                                      trust_remote_code=False, use_safetensors=True)
    problems = []
    if info.get("unexpected_keys"):
        problems.append(f"unmapped weights (in the checkpoint, not in {cls.__name__}): "
                        f"{_describe(info['unexpected_keys'])}")
    if info.get("missing_keys"):
        problems.append(f"missing weights (in {cls.__name__}, not in the checkpoint): {_describe(info['missing_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"weights of the wrong shape: {_describe([str(k) for k in info['mismatched_keys']])}")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"])))
    if problems:
        raise CheckpointError(f"{ckpt.path} ({ckpt.source_type} -> {ckpt.stock_type}): " + "; ".join(problems))
    return model.eval()


def _generation_eos(path: Path) -> int | None:
    f = path / "generation_config.json"
    if not f.is_file():
        return None
    eos = json.loads(f.read_text()).get("eos_token_id")
    return eos[0] if isinstance(eos, list) and eos else eos if isinstance(eos, int) else None


def load_released(path: str | os.PathLike, *, block_size: int | None = None, mask_token: str = MASK_TOKEN,
                  eos_token_id: int | None = None, pad_token_id: int | None = None,
                  dtype: str | torch.dtype = "float32", attn_backend: str = "sdpa",
                  tokenizer_path: str | os.PathLike | None = None) -> tuple[BlockDiffusionLM, Any]:
    """Load an SDAR- or ECHO-style checkpoint as a :class:`BlockDiffusionLM` and its tokenizer.

    Rules (DESIGN.md §2 and the checkpoint's own conventions):

    - the block size comes from the config (SDAR's ``block_size``) or ``block_size``; both given
      and different, or neither given, is an error;
    - the mask id comes from ``config.mask_token_id`` or the tokenizer's ``mask_token``
      (``<|MASK|>``); both present and different is an error;
    - no shift: SDAR and ECHO read the logits at position i for token i;
    - EOS: ``eos_token_id``, else the tokenizer's EOS (``<|im_end|>`` for chat models), else the
      first of ``generation_config.eos_token_id``; pad: ``pad_token_id``, else the tokenizer's.

    Returns:
        ``(model, tokenizer)``; ``model.save_pretrained(out, tokenizer=tok)`` writes a plain
        blockdistill checkpoint that every stage loads.
    """
    from blockdistill.models.backbones import load_tokenizer

    torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    ckpt = read_checkpoint_config(path)
    if block_size is not None and block_size < 1:
        raise CheckpointError(f"block_size must be >= 1, got {block_size}")
    if ckpt.block_size is not None and block_size is not None and ckpt.block_size != block_size:
        raise CheckpointError(f"{ckpt.path}: the checkpoint was trained with block_size={ckpt.block_size} "
                              f"but block_size={block_size} was asked for")
    size = block_size if block_size is not None else ckpt.block_size
    if size is None:
        raise CheckpointError(f"{ckpt.path}: the config states no block size ({ckpt.source_type} checkpoints "
                              "such as ECHO's do not); pass block_size= (ECHO: 8)")
    tok = load_tokenizer(tokenizer_path or ckpt.path)
    tok_mask = tok.get_vocab().get(mask_token)
    if ckpt.mask_token_id is not None and tok_mask is not None and tok_mask != ckpt.mask_token_id:
        raise CheckpointError(f"{ckpt.path}: config.mask_token_id={ckpt.mask_token_id} but the tokenizer's "
                              f"{mask_token!r} is id {tok_mask}")
    mask = ckpt.mask_token_id if ckpt.mask_token_id is not None else tok_mask
    if mask is None:
        raise CheckpointError(f"{ckpt.path}: no mask token: the config has no mask_token_id and the tokenizer "
                              f"no {mask_token!r} (pass mask_token= if the checkpoint names it otherwise)")
    eos = eos_token_id if eos_token_id is not None else tok.eos_token_id
    eos = eos if eos is not None else _generation_eos(ckpt.path)
    eos = eos if eos is not None else ckpt.config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise CheckpointError(f"{ckpt.path}: no EOS id in the tokenizer or configs; pass eos_token_id=")
    pad = pad_token_id if pad_token_id is not None else (tok.pad_token_id if tok.pad_token_id is not None else eos)
    model = load_stock_model(ckpt, torch_dtype)
    spec = BlockSpec(block_size=size, mask_token_id=int(mask), eos_token_id=int(eos), pad_token_id=int(pad),
                     shift=False)
    bd = BlockDiffusionLM(model, spec, attn_backend=attn_backend)
    mark_trained(bd, "released")  # trained by its authors: collect and train-dcd accept it
    return bd, tok
