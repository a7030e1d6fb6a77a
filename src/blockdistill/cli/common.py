"""What every sub-command does with its config before calling a recipe: the tokenizer, the
block rules as keyword arguments, the teacher, and the config saved next to the output."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from blockdistill.config import BlockConfig, ConfigError, DataConfig, ModelConfig, to_yaml


def tokenizer_for(model: ModelConfig, data: DataConfig) -> Any:
    """``data.tokenizer``, else the checkpoint's own (``model.pretrained`` or the GGUF's)."""
    from blockdistill.models.backbones import load_tokenizer, model_dir

    path = data.tokenizer or model_dir(model)
    if path is None:
        raise ConfigError("data.tokenizer: is required when model.tiny is used")
    return load_tokenizer(path, trust_remote_code=model.trust_remote_code)


def block_args(block: BlockConfig) -> dict[str, Any]:
    """``block`` as the keyword arguments of :func:`~blockdistill.recipes.wrap_for_stage`
    (unset fields mean: the saved model's)."""
    return dataclasses.asdict(block)


def teacher(model: ModelConfig, block: BlockConfig, tokenizer: Any, seed: int):
    """The saved block-diffusion model ``model`` names, in eval mode, with the block rules it was
    trained with (a configured ``block.*`` that contradicts them is a ConfigError naming it).
    A model never trained as a block-diffusion model is refused
    (:func:`~blockdistill.models.provenance.require_block_trained`)."""
    from blockdistill.models.backbones import load_backbone
    from blockdistill.models.provenance import require_block_trained
    from blockdistill.recipes import wrap_for_stage

    backbone = load_backbone(model, seed)
    name = f"model.pretrained={model.pretrained}" if model.pretrained else "the teacher (model.tiny/gguf_file)"
    require_block_trained(backbone, name)  # before wrap_for_stage would convert an AR model
    return wrap_for_stage(backbone, tokenizer, **block_args(block)).eval()


def prompts(data: DataConfig, tokenizer: Any) -> list[dict[str, Any]]:
    """The prompts of ``data.train_file`` (JSONL with ``prompt`` or ``prompt_ids``)."""
    from blockdistill.distill.prompts import read_prompts

    if data.train_file is None:
        raise ConfigError("data.train_file: is required (a JSONL of prompts)")
    return read_prompts(data.train_file, tokenizer)


def save_config(cfg: Any, out: str | Path, name: str = "blockdistill_train.yaml") -> None:
    """The full resolved config, next to the stage's output (for reproducibility)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(to_yaml(cfg))
