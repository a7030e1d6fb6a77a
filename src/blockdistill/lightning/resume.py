"""Exact resume: the data order, the RNG and the training config travel in every checkpoint.

A run killed at any step, mid-epoch and with shuffling on, resumes to the same next-step loss
and the same final weights as an uninterrupted one:

- :class:`ResumableSampler` draws each epoch's order from ``(seed, epoch)`` alone (a
  ``DistributedSampler``, so Lightning keeps it under DDP and it shards by rank itself) and can
  start an epoch part-way;
- :class:`ResumableLoader` is a ``DataLoader`` with ``state_dict``/``load_state_dict``: Lightning
  stores its state (epoch, batches handed out this epoch) in the checkpoint's loop state and
  restores it before the first batch of the resumed run, which then skips exactly the batches
  already trained on (their indices only: nothing is loaded or collated twice). The count is
  the loader's own, so it is exact whatever the workers prefetch; Lightning's fetcher does not
  prefetch a loader whose length is known;
- :class:`ResumeGuard` stores the CPU (and CUDA) RNG state and the stage's training settings.
  Resuming with a setting that changes training (lr, schedule, batch size, block size, ...) set
  differently is a :class:`ResumeConfigError` naming each field, unless the run allows it
  (``trainer.allow_config_change``); the changes are then recorded in
  ``<default_root_dir>/resume_changes.jsonl``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from blockdistill.config import ConfigError

__all__ = ["ResumableLoader", "ResumableSampler", "ResumeConfigError", "ResumeGuard", "flatten_settings"]


class ResumeConfigError(ConfigError):
    """A resumed run's training settings differ from those its checkpoint was trained with."""


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler):
    """Epoch order from ``(seed, epoch)`` (shuffled or sequential), sharded by rank; the first
    ``skip`` indices of the next epoch iterated are left out once (a resumed epoch)."""

    def __init__(self, dataset: Any, *, shuffle: bool, seed: int = 0, drop_last: bool = False) -> None:
        replicas, rank = _world()
        super().__init__(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose position Lightning checkpoints.

    Args:
        dataset: map-style dataset.
        batch_size, collate_fn, num_workers, drop_last: as for ``DataLoader``.
        shuffle: draw a new order each epoch from ``(seed, epoch)``.
        seed: the order's seed (the run's ``trainer.seed``).
    """

    def __init__(self, dataset: Any, *, batch_size: int, shuffle: bool, seed: int = 0, collate_fn: Any = None,
                 num_workers: int = 0, drop_last: bool = False) -> None:
        sampler = ResumableSampler(dataset, shuffle=shuffle, seed=seed)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                         num_workers=num_workers, drop_last=drop_last)
        self._served = 0  # batches of the current epoch handed to the loop (including skipped ones)

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        self._served = sampler.skip // self.batch_size
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the loop is: the epoch, the batches of it served, and what the order depends on."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        return {"epoch": int(sampler.epoch), "batches": int(self._served), "seed": int(sampler.seed),
                "num_examples": len(self.dataset), "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the checkpoint's epoch after its last served batch (the data must be the same)."""
        if state.get("num_examples") != len(self.dataset):
            raise ResumeConfigError(f"data: the checkpoint was trained on {state.get('num_examples')} examples but "
                                    f"the data now has {len(self.dataset)}; resume on the same data or start a new "
                                    "run (another trainer.default_root_dir)")
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        batches = int(state["batches"])
        if batches >= len(self):  # saved after the epoch's last batch: the next epoch starts whole
            sampler.set_epoch(int(state["epoch"]) + 1)
            batches = 0
        else:
            sampler.set_epoch(int(state["epoch"]))
        sampler.skip = batches * self.batch_size
        self._served = batches


def flatten_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_settings(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


class ResumeGuard(L.Callback):
    """Checkpoints the RNG and the run's training settings; refuses a resume that changes them.

    Args:
        settings: the fields that change training, flat or nested (e.g. ``{"optim": {...},
            "data.batch_size": 8, "block.block_size": 4, "trainer.max_steps": 100}``).
        allow_change: resume anyway when settings differ, recording the changes.
        record_dir: where ``resume_changes.jsonl`` is appended (the run's root directory).
    """

    def __init__(self, settings: Mapping[str, Any], *, allow_change: bool = False,
                 record_dir: str | os.PathLike | None = None) -> None:
        self.settings = flatten_settings(settings)
        self.allow_change = allow_change
        self.record_dir = None if record_dir is None else Path(record_dir)
        self._rng: dict[str, Any] | None = None
        self.changes: dict[str, dict[str, Any]] = {}

    @property
    def state_key(self) -> str:
        return "ResumeGuard"

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"settings": dict(self.settings), "torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("settings", {})
        self.changes = {k: {"checkpoint": saved.get(k), "now": v} for k, v in self.settings.items()
                        if k in saved and saved[k] != v}
        if self.changes and not self.allow_change:
            fields = "; ".join(f"{k}: checkpoint {c['checkpoint']!r}, now {c['now']!r}" for k, c in self.changes.items())
            raise ResumeConfigError(
                f"resume: the run in this directory was trained with other settings ({fields}). Set them back, "
                "resume anyway with trainer.allow_config_change=true (the changes are recorded), or start a new "
                "run in another trainer.default_root_dir")
        self._rng = {k: state[k] for k in ("torch_rng", "cuda_rng") if k in state}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is not None:
            torch.set_rng_state(self._rng["torch_rng"])
            if "cuda_rng" in self._rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng["cuda_rng"])
            self._rng = None
        if self.changes and trainer.is_global_zero and self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            with open(self.record_dir / "resume_changes.jsonl", "a") as f:
                f.write(json.dumps({"resumed_at_step": int(trainer.global_step), "changes": self.changes}) + "\n")
            print(f"note: resumed at step {trainer.global_step} with changed settings: {sorted(self.changes)} "
                  f"(recorded in {self.record_dir / 'resume_changes.jsonl'})")
