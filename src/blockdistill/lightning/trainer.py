"""Build a ``lightning.Trainer`` from :class:`TrainerConfig`, with checkpoints that resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from blockdistill.config import TrainerConfig


def checkpoint_dir(cfg: TrainerConfig) -> Path:
    return Path(cfg.default_root_dir) / "checkpoints"


def resume_path(cfg: TrainerConfig) -> str | None:
    """``last.ckpt`` of an interrupted run in ``cfg.default_root_dir``, if any."""
    last = checkpoint_dir(cfg) / "last.ckpt"
    return str(last) if last.is_file() else None


def build_trainer(cfg: TrainerConfig, callbacks: list | None = None, logger=False, **overrides) -> L.Trainer:
    """A Trainer that checkpoints ``last.ckpt`` every ``save_every_n_steps`` and at the end.

    Distribution is Lightning's own (``strategy="ddp" | "fsdp" | "deepspeed_stage_2" ...``).
    """
    ckpt = ModelCheckpoint(dirpath=checkpoint_dir(cfg), save_last=True, save_top_k=0,
                           every_n_train_steps=cfg.save_every_n_steps, save_on_train_epoch_end=True)
    kw = dict(
        max_steps=cfg.max_steps, accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
        precision=cfg.precision, accumulate_grad_batches=cfg.accumulate_grad_batches,
        log_every_n_steps=cfg.log_every_n_steps, default_root_dir=cfg.default_root_dir,
        callbacks=[ckpt, *(callbacks or [])], logger=logger, enable_progress_bar=cfg.enable_progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    kw.update(overrides)
    return L.Trainer(**kw)
