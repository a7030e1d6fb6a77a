"""Build a ``lightning.Trainer`` from :class:`TrainerConfig`, with checkpoints that resume exactly.

What a run writes under ``trainer.default_root_dir``:

- ``checkpoints/last.ckpt`` (``trainer.save_last``, default on): model, optimiser, schedule,
  loop and data-order state, every ``save_every_n_steps`` steps and at the end; a rerun resumes
  from it. It is written only while the loss and the weights are finite (:class:`GuardedCheckpoint`),
  so after a NaN blow-up it is the last known-good state;
- ``checkpoints/step=*.ckpt``: the ``trainer.save_top_k`` best by ``trainer.monitor`` (default none);
- ``logs/version_0/metrics.csv``: the CSV log, appended to by a resumed run;
- ``resume_changes.jsonl``: the settings a resume with ``trainer.allow_config_change`` changed.

Every ``.ckpt`` is written and read by :class:`~blockdistill.lightning.checkpoint_io.VerifiedCheckpointIO`:
atomically, with a ``<name>.ckpt.sha256`` sidecar checked before a resume, and loaded with
``weights_only=True`` explicitly (a damaged or code-carrying checkpoint is a ``DamagedFileError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from blockdistill.config import TrainerConfig
from blockdistill.lightning.checkpoint_io import VerifiedCheckpointIO, preflight_checkpoint
from blockdistill.lightning.logs import ProgressLog, _TrimOnResume, run_logger
from blockdistill.lightning.resume import ResumeGuard

__all__ = ["GuardedCheckpoint", "build_trainer", "checkpoint_dir", "resume_path", "training_settings"]


def checkpoint_dir(cfg: TrainerConfig) -> Path:
    return Path(cfg.default_root_dir) / "checkpoints"


def resume_path(cfg: TrainerConfig) -> str | None:
    """``last.ckpt`` of an interrupted run in ``cfg.default_root_dir``, if any.

    Under FSDP and DeepSpeed, Lightning reads a checkpoint file itself (its lazy unpickler), not
    through the trainer's ``CheckpointIO``; there the file is checked here instead: its sidecar,
    then ``torch.load(weights_only=True, mmap=True)``, so the bytes Lightning reads are the ones
    shown to hold only weights (a :class:`~blockdistill.utils.checksum.DamagedFileError` if not)."""
    last = checkpoint_dir(cfg) / "last.ckpt"
    if not last.is_file():
        return None
    if any(name in str(cfg.strategy).lower() for name in ("fsdp", "deepspeed")):
        preflight_checkpoint(last)
    return str(last)


def weights_finite(module: torch.nn.Module) -> bool:
    """Every parameter of ``module`` is finite."""
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


class GuardedCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never writes a state whose last loss or whose weights are non-finite
    (the system's ``_nan_streak`` counts the non-finite steps in a row), so the checkpoint on disk
    is always one to resume from with a lower learning rate."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        if getattr(module, "_nan_streak", 0) > 0 or not weights_finite(module):
            rank_zero_warn(f"not writing {filepath} at step {trainer.global_step}: the loss or the weights are "
                           "non-finite; the previous checkpoint is kept as the last known-good one")
            return
        super()._save_checkpoint(trainer, filepath)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        """The final step is checkpointed too (Lightning's saves only every ``every_n_train_steps``), so
        rerunning a finished run resumes at its end instead of retraining its last steps."""
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if (self.save_last and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
                and self._last_global_step_saved != trainer.global_step):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def training_settings(system: L.LightningModule, data: Any, cfg: TrainerConfig) -> dict[str, Any]:
    """The settings a resume must not change silently: the system's hyper-parameters (optimiser,
    noise, block rules, distillation), the batch size and the trainer's schedule-defining fields."""
    settings: dict[str, Any] = dict(system.hparams)
    batch_size = getattr(data, "batch_size", None)
    if batch_size is not None:
        settings["data.batch_size"] = batch_size
    for name in ("max_steps", "accumulate_grad_batches", "seed", "precision"):
        settings[f"trainer.{name}"] = getattr(cfg, name)
    return settings


def build_trainer(cfg: TrainerConfig, callbacks: list | None = None, logger: Any = None,
                  settings: dict[str, Any] | None = None, **overrides: Any) -> L.Trainer:
    """A Trainer writing what the module docstring lists.

    ``logger``: None = the run's appending CSV log, False = none, else a Lightning logger.
    ``settings``: the training settings checked on resume (:func:`training_settings`); None
    checks nothing but still restores the RNG. Distribution is Lightning's own
    (``strategy="ddp" | "fsdp" | "deepspeed_stage_2" ...``).
    """
    ckpt = GuardedCheckpoint(dirpath=checkpoint_dir(cfg), save_last=cfg.save_last, save_top_k=cfg.save_top_k,
                             monitor=cfg.monitor if cfg.save_top_k != 0 else None,
                             filename="step={step}", auto_insert_metric_name=False,
                             every_n_train_steps=cfg.save_every_n_steps, save_on_train_epoch_end=True)
    guard = ResumeGuard(settings or {}, allow_change=cfg.allow_config_change, record_dir=cfg.default_root_dir)
    if logger is None:
        logger = run_logger(cfg.default_root_dir)
    own = [guard, ProgressLog(every=cfg.log_every_n_steps)]
    if logger is not False:
        own.append(_TrimOnResume())
    kw = dict(
        max_steps=cfg.max_steps, accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
        precision=cfg.precision, accumulate_grad_batches=cfg.accumulate_grad_batches,
        log_every_n_steps=cfg.log_every_n_steps, default_root_dir=cfg.default_root_dir,
        callbacks=[ckpt, *own, *(callbacks or [])], logger=logger, enable_progress_bar=cfg.enable_progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0, plugins=[VerifiedCheckpointIO()],
    )
    kw.update(overrides)
    return L.Trainer(**kw)
