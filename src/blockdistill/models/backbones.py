"""Load a backbone and tokenizer from a :class:`ModelConfig` (local checkpoint or tiny random init).

Nothing here downloads silently and nothing runs remote code unless ``trust_remote_code`` is
set explicitly in the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockdistill.config import ModelConfig
from blockdistill.utils.checksum import verify_model_dir

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _auto_class(config: Any):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if hasattr(config, "vision_config") else AutoModelForCausalLM


def model_dir(cfg: ModelConfig) -> str | Path | None:
    """Where ``cfg``'s weights and tokenizer are: ``model.pretrained``, or for a ``model.gguf_file``
    the plain model converted from it once into the cache (``$BLOCKDISTILL_CACHE``, else
    ``~/.cache/blockdistill``; see :mod:`blockdistill.models.gguf`); None for ``model.tiny``."""
    if cfg.gguf_file is not None:
        from blockdistill.models.gguf import converted_dir

        return converted_dir(cfg.gguf_file, cfg.pretrained)
    return cfg.pretrained


def load_backbone(cfg: ModelConfig, seed: int = 0) -> nn.Module:
    """The HF model described by ``cfg``: weights from ``cfg.pretrained``, a dequantized
    ``cfg.gguf_file`` (a plain model, no quantizer attached) or random init from ``cfg.tiny``."""
    from transformers import AutoConfig

    dtype = _DTYPES[cfg.dtype]
    if cfg.gguf_file is not None:
        from transformers import AutoModelForCausalLM

        cached = model_dir(cfg)
        verify_model_dir(cached)  # the dequantized cache carries a manifest too
        return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    if cfg.pretrained is not None:
        path = cfg.pretrained
        if not Path(path).exists() and "/" not in path:
            raise FileNotFoundError(f"model.pretrained={path!r} is not a local directory")
        verify_model_dir(path)
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        return _auto_class(config).from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    kw = dict(cfg.tiny)
    model_type = kw.pop("model_type")
    if cfg.init_range is not None:
        kw["initializer_range"] = cfg.init_range
        for sub in ("text_config", "vision_config"):
            if isinstance(kw.get(sub), dict):
                kw[sub] = {**kw[sub], "initializer_range": cfg.init_range}
    config = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    return _auto_class(config).from_config(config, dtype=dtype)


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """A tokenizer from a local directory (``save_pretrained`` layout).

    A tokenizer saved from a plain ``tokenizer.json`` (class ``TokenizersBackend`` or
    ``PreTrainedTokenizerFast``) is reloaded exactly as saved. ``AutoTokenizer`` would otherwise
    pick the class of the ``config.json`` beside it (e.g. ``Qwen2Tokenizer``) and rebuild the
    vocabulary with that class's model, which silently breaks a word-level or custom tokenizer.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer path {str(path)!r} does not exist")
    verify_model_dir(path)
    if path.is_file() and path.suffix == ".gguf":  # the tokenizer stored in a GGUF checkpoint
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    cfg_file = path / "tokenizer_config.json"
    if cfg_file.is_file() and (path / "tokenizer.json").is_file():
        cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def stop_ids(model: nn.Module, tokenizer: Any, eos_token_id: int | Sequence[int] | None = None) -> list[int]:
    """The EOS ids a converted model stops at: ``eos_token_id`` (an id or a list) when given; else
    the tokenizer's EOS first (it pads), then every id of the HF generation config's
    ``eos_token_id`` (a list for Llama-3-Instruct, Qwen2.5-Instruct)."""
    if eos_token_id is not None:
        ids = [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(i) for i in eos_token_id]
    else:
        gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        gen = [] if gen is None else [gen] if isinstance(gen, int) else list(gen)
        first = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else (gen[0] if gen else None)
        ids = [] if first is None else [int(first), *(int(i) for i in gen)]
    if not ids:
        raise ValueError("tokenizer and generation config have no eos_token_id; pass eos_token_id explicitly")
    return list(dict.fromkeys(ids))
