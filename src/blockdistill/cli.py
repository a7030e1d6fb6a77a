"""``blockdistill`` command line: one sub-command per stage, each a YAML config plus overrides.

    blockdistill train-ar  --config ar.yaml  trainer.max_steps=200
    blockdistill train-rad --config rad.yaml block.block_size=8 layout=rad
    blockdistill show-config train-rad   # print the full default config as YAML
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from blockdistill.config import ARTrainConfig, ConfigError, RADTrainConfig, load_config, to_yaml

COMMANDS: dict[str, tuple[type, Callable, str]] = {}
PLUGIN_MODULES: tuple[str, ...] = ("blockdistill.cli_dcd", "blockdistill.interop.cli")
"""Modules imported at start-up that register more sub-commands (e.g. distillation)."""


def command(name: str, cfg_cls: type, help: str):
    """Register ``fn(cfg)`` as sub-command ``name`` taking a ``cfg_cls`` config."""
    def deco(fn: Callable) -> Callable:
        COMMANDS[name] = (cfg_cls, fn, help)
        return fn
    return deco


def _data(cfg, tokenizer, spec_eos: int, pad: int, block_size: int):
    from blockdistill.data import BlockCollator
    from blockdistill.lightning import BlockDataModule, JsonlExamples

    if cfg.data.train_file is None:
        raise ConfigError("data.train_file: is required")
    ds = JsonlExamples(cfg.data.train_file, tokenizer)
    coll = BlockCollator(block_size, spec_eos, pad, max_length=cfg.data.max_length)
    return BlockDataModule(ds, coll, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)


def _save_config(cfg, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "blockdistill_train.yaml").write_text(to_yaml(cfg))


def _tokenizer_for(cfg):
    from blockdistill.models.backbones import load_tokenizer

    path = cfg.data.tokenizer or cfg.model.pretrained
    if path is None:
        raise ConfigError("data.tokenizer: is required when model.tiny is used")
    return load_tokenizer(path, trust_remote_code=cfg.model.trust_remote_code)


@command("train-ar", ARTrainConfig, "stage 1: AR continued pre-training")
def train_ar(cfg: ARTrainConfig) -> None:
    import lightning as L

    from blockdistill.lightning import ARSystem, build_trainer, resume_path
    from blockdistill.models.backbones import load_backbone

    L.seed_everything(cfg.trainer.seed)
    tok = _tokenizer_for(cfg)
    model = load_backbone(cfg.model, cfg.trainer.seed)
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    eos = cfg.block.eos_token_id if cfg.block.eos_token_id is not None else tok.eos_token_id
    pad = cfg.block.pad_token_id if cfg.block.pad_token_id is not None else (tok.pad_token_id or eos)
    dm = _data(cfg, tok, eos, pad, 1)
    system = ARSystem(model.train(), cfg.optim, cfg.block.attn_backend)
    trainer = build_trainer(cfg.trainer)
    trainer.fit(system, dm, ckpt_path=resume_path(cfg.trainer))
    if trainer.is_global_zero:
        out = Path(cfg.output_dir)
        from blockdistill.models.adapter import atomic_save_pretrained

        atomic_save_pretrained(model, out, tokenizer=tok)
        _save_config(cfg, out)
        print(f"saved AR model to {out}")


@command("train-rad", RADTrainConfig, "stage 2: RAD adaptation into a block-diffusion model")
def train_rad(cfg: RADTrainConfig) -> None:
    import lightning as L

    from blockdistill.lightning import RADSystem, build_trainer, resume_path
    from blockdistill.models.adapter import BlockDiffusionLM, wrap_for_stage
    from blockdistill.models.backbones import load_backbone

    L.seed_everything(cfg.trainer.seed)
    tok = _tokenizer_for(cfg)
    model = load_backbone(cfg.model, cfg.trainer.seed)
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    bd: BlockDiffusionLM = wrap_for_stage(model, tok, cfg.block, allow_block_size_change=True)
    dm = _data(cfg, tok, bd.spec.eos_token_id, bd.spec.pad_token_id, bd.block_size)
    system = RADSystem(bd.train(), cfg.optim, cfg.noise, cfg.layout, seed=cfg.trainer.seed)
    trainer = build_trainer(cfg.trainer)
    trainer.fit(system, dm, ckpt_path=resume_path(cfg.trainer))
    if trainer.is_global_zero:
        out = Path(cfg.output_dir)
        bd.save_pretrained(out, tokenizer=tok)
        _save_config(cfg, out)
        print(f"saved block-diffusion model to {out}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _load_plugins()
    parser = argparse.ArgumentParser(prog="blockdistill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, (_, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", "-c", help="YAML config file")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4")
    p = sub.add_parser("show-config", help="print a command's full default config")
    p.add_argument("name", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    if args.cmd == "show-config":
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(OmegaConf.structured(COMMANDS[args.name][0])))
        return 0
    cfg_cls, fn, _ = COMMANDS[args.cmd]
    try:
        cfg = load_config(cfg_cls, args.config, args.overrides)
    except ConfigError as e:
        print(f"blockdistill {args.cmd}: invalid config: {e}", file=sys.stderr)
        return 2
    fn(cfg)
    return 0


def _load_plugins() -> None:
    """Import the modules that register further sub-commands with :func:`command`."""
    import importlib

    for mod in PLUGIN_MODULES:
        importlib.import_module(mod)


if __name__ == "__main__":
    # Plugins import ``blockdistill.cli`` to register commands: make that this very module.
    sys.modules.setdefault("blockdistill.cli", sys.modules[__name__])
    raise SystemExit(main())
