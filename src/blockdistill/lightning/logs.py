"""Training logs that survive a resume, and a progress line when there is no terminal.

- :class:`ResumableCSVLogger`: Lightning's ``CSVLogger`` (``<root>/logs/version_0/metrics.csv``)
  that appends. Lightning's own deletes ``metrics.csv`` when its directory exists, so a resumed
  run would lose the curve before the kill. On resume the rows logged after the checkpoint (by
  steps that are trained again) are dropped, so every step appears once;
- :class:`ProgressLog`: every ``every`` optimiser steps one line ``step loss lr tokens/s`` on the
  ``blockdistill.train`` logger (stderr by default), when stderr is not a terminal (a redirected
  or batch-scheduled run; a terminal has Lightning's progress bar).
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["ProgressLog", "ResumableCSVLogger", "run_logger"]

log = logging.getLogger("blockdistill.train")


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and its columns (Lightning's writer deletes it)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)

    def drop_from_step(self, step: int) -> int:
        """Remove rows with ``step >= step`` (logged after the checkpoint resumed from); returns how many."""
        self.save()
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(keep) != len(rows):
            tmp = self.metrics_file_path + ".tmp"
            with self._fs.open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.metrics_keys)
                w.writeheader()
                w.writerows(keep)
            os.replace(tmp, self.metrics_file_path)
        return len(rows) - len(keep)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` a resumed run appends to (see the module docstring)."""

    @property
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _TrimOnResume(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0 and trainer.is_global_zero:
            for lg in trainer.loggers:
                if isinstance(lg, ResumableCSVLogger):
                    lg.experiment.drop_from_step(trainer.global_step)


def run_logger(default_root_dir: str | os.PathLike) -> ResumableCSVLogger:
    """The run's CSV log: ``<default_root_dir>/logs/version_0/metrics.csv`` (appended on resume)."""
    return ResumableCSVLogger(str(default_root_dir), name="logs", version=0)


def _tokens(batch: Any) -> int:
    seq = getattr(batch, "seq_lens", None)
    if seq is not None:
        return int(seq.sum())
    ids = getattr(batch, "input_ids", None)
    return int(ids.numel()) if ids is not None else 0


class ProgressLog(L.Callback):
    """One line per ``every`` optimiser steps (step, loss, lr, tokens/s) when not on a terminal.

    Args:
        every: interval in optimiser steps.
        force: log even when stderr is a terminal.
    """

    def __init__(self, every: int = 10, force: bool = False) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.force = every, force
        self._tokens, self._t0, self._last_step = 0, 0.0, -1

    def _active(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and (self.force or not sys.stderr.isatty())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tokens, self._t0, self._last_step = 0, time.perf_counter(), trainer.global_step
        if self._active(trainer) and not log.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._tokens += _tokens(batch) * trainer.world_size
        step = trainer.global_step
        if step == self._last_step or step % self.every != 0 or not self._active(trainer):
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        loss = trainer.callback_metrics.get("train/loss")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        loss_s = f"{float(loss):.4f}" if loss is not None else "n/a"
        log.info(f"step {step}/{trainer.max_steps} loss {loss_s} lr {lr:.3e} tokens/s {self._tokens / elapsed:.0f}")
        self._tokens, self._t0, self._last_step = 0, time.perf_counter(), step
