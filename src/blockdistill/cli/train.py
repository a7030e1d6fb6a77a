"""``train-ar`` and ``train-rad``: stages 1 and 2 from a config, through the recipes."""

from __future__ import annotations

from blockdistill.cli.common import block_args, save_config, tokenizer_for
from blockdistill.config import ARTrainConfig, ConfigError, DataConfig, RADTrainConfig


def _data(data: DataConfig, tokenizer, block_size: int, eos: int, pad: int, model):
    """``data.train_file``, every example checked against ``model`` first: ids in its vocabulary, the
    stream within ``data.max_length`` or, without it, the backbone's context (errors name file:line)."""
    from blockdistill.lightning import JsonlExamples
    from blockdistill.models.families import family_for
    from blockdistill.recipes import block_data

    if data.train_file is None:
        raise ConfigError("data.train_file: is required")
    examples = JsonlExamples(data.train_file, tokenizer)
    backbone = getattr(model, "model", model)
    family = family_for(backbone)
    examples.check(block_size=block_size, vocab_size=family.input_embeddings(backbone).num_embeddings,
                   max_length=data.max_length,
                   context=getattr(family.text_config(backbone), "max_position_embeddings", None))
    return block_data(examples, block_size=block_size, eos_token_id=eos,
                      pad_token_id=pad, batch_size=data.batch_size, num_workers=data.num_workers,
                      max_length=data.max_length)


def train_ar(cfg: ARTrainConfig) -> None:
    """Stage 1: AR continued pre-training of ``model`` on ``data``, saved to ``output_dir``."""
    import lightning as L

    from blockdistill.models.backbones import load_backbone
    from blockdistill.recipes import train_ar as recipe

    L.seed_everything(cfg.trainer.seed)
    tok = tokenizer_for(cfg.model, cfg.data)
    model = load_backbone(cfg.model, cfg.trainer.seed)
    eos = cfg.block.eos_token_id if cfg.block.eos_token_id is not None else tok.eos_token_id
    pad = cfg.block.pad_token_id if cfg.block.pad_token_id is not None else (tok.pad_token_id or eos)
    res = recipe(model, _data(cfg.data, tok, 1, eos, pad, model), optim=cfg.optim, trainer=cfg.trainer,
                 attn_backend=cfg.block.attn_backend, out_dir=cfg.output_dir, tokenizer=tok)
    if res.trainer.is_global_zero:
        save_config(cfg, cfg.output_dir)
        print(f"saved AR model to {cfg.output_dir}")


def train_rad(cfg: RADTrainConfig) -> None:
    """Stage 2: RAD adaptation (an AR model is converted, a block model keeps its rules)."""
    import lightning as L

    from blockdistill.models.backbones import load_backbone
    from blockdistill.recipes import train_rad as recipe
    from blockdistill.recipes import wrap_for_stage

    L.seed_everything(cfg.trainer.seed)
    tok = tokenizer_for(cfg.model, cfg.data)
    bd = wrap_for_stage(load_backbone(cfg.model, cfg.trainer.seed), tok, **block_args(cfg.block),
                        allow_block_size_change=True)
    data = _data(cfg.data, tok, bd.block_size, bd.spec.eos_token_id, bd.spec.pad_token_id, bd)
    res = recipe(bd, data, optim=cfg.optim, noise=cfg.noise, trainer=cfg.trainer, layout=cfg.layout,
                 lora=cfg.lora, out_dir=cfg.output_dir, tokenizer=tok)
    if res.trainer.is_global_zero:
        save_config(cfg, cfg.output_dir)
        print(f"saved block-diffusion model to {cfg.output_dir} (block_size={bd.block_size}, shift={bd.spec.shift})")
