"""Offline trajectory collection through Lightning's predict loop (DCD phase 1).

- :class:`PromptDataModule` serves prompts; in ``setup`` (which every rank runs before the
  post-setup barrier, hence before any rank writes) it skips ids a previous run finished, so
  an interrupted collection resumes where it stopped;
- :class:`CollectSystem` decodes each batch with the multi-step teacher and returns records;
- :class:`TrajectoryWriter` (a ``BasePredictionWriter``) writes each rank's records to its own
  atomic, checksummed shards and merges the manifests at the end.

It runs unchanged on one device or several (``Trainer(devices=2, strategy="ddp_spawn")``):
Lightning's predict sampler gives each rank a disjoint slice, and ranks never share a file.

Example::

    dm = PromptDataModule(read_prompts("prompts.jsonl"), pad_token_id=eos, skip_done_in="runs/traj")
    system = CollectSystem(teacher, top_k=64, max_new_tokens=256)
    writer = TrajectoryWriter("runs/traj", shard_size=256, filter=RepetitionFilter())
    L.Trainer(callbacks=[writer], logger=False).predict(system, dm, return_predictions=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torch.utils.data import DataLoader, Subset

from blockdistill.distill.collectors import TrajectoryCollector
from blockdistill.distill.filters import TrajectoryFilter
from blockdistill.distill.prompts import PromptBatch, collate_prompts
from blockdistill.distill.records import TrajectoryRecord
from blockdistill.distill.writer import ShardWriter, done_ids, finalize_manifest
from blockdistill.lightning.data import order_seed
from blockdistill.lightning.resume import ResumableLoader
from blockdistill.sampling.denoiser import Denoiser
from blockdistill.utils.progress import LineProgress

__all__ = ["CollectSystem", "PromptDataModule", "TrajectoryWriter"]


class PromptDataModule(L.LightningDataModule):
    """Prompts ``{"id", "prompt_ids", ...}`` for collection (predict) or online DCD (fit).

    Args:
        examples: the prompts, in a fixed order (every rank must see the same list).
        pad_token_id: batch padding id of the prompt tensors.
        skip_done_in: a collection directory; ids its manifests list are skipped.
        shuffle: shuffle the training loader (online DCD; a resumable order from ``(seed, epoch)``);
            predict never shuffles.
        seed: the training order's seed (None: the run's ``seed_everything`` seed).
    """

    def __init__(self, examples: Sequence[dict[str, Any]], pad_token_id: int, batch_size: int = 8,
                 num_workers: int = 0, skip_done_in: str | Path | None = None, shuffle: bool = True,
                 ids: Sequence[str] | None = None, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed
        # ``examples`` may be a lazy sequence (e.g. images processed on access); with ``ids`` given,
        # resuming filters by id without touching the examples themselves.
        self.examples = examples if ids is not None else list(examples)
        self.ids = [str(i) for i in ids] if ids is not None else None
        self.pad, self.batch_size, self.num_workers = pad_token_id, batch_size, num_workers
        self.skip_done_in, self.shuffle = skip_done_in, shuffle
        self.remaining: list[dict[str, Any]] = self.examples
        self.num_skipped = 0

    def setup(self, stage: str) -> None:
        todo = self.examples
        if self.skip_done_in is not None:
            done = done_ids(self.skip_done_in)
            if self.ids is not None:
                todo = Subset(self.examples, [i for i, x in enumerate(self.ids) if x not in done])
            else:
                todo = [e for e in self.examples if str(e["id"]) not in done]
        self.num_skipped = len(self.examples) - len(todo)
        world = self.trainer.world_size if self.trainer is not None else 1
        if stage == "predict" and 0 < len(todo) < world:
            # Lightning's unrepeated predict sampler needs a row per rank; placeholders are never decoded.
            todo = list(todo) + [{**todo[-1], "skip": True}] * (world - len(todo))
        self.remaining = todo

    def _collate(self, examples: list[dict[str, Any]]) -> PromptBatch:
        return collate_prompts(examples, self.pad)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.remaining, batch_size=self.batch_size, shuffle=False, collate_fn=self._collate,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(self.remaining, batch_size=self.batch_size, shuffle=self.shuffle,
                               seed=order_seed(self.seed), collate_fn=self._collate, num_workers=self.num_workers,
                               drop_last=len(self.remaining) >= self.batch_size)


class CollectSystem(L.LightningModule):
    """Predict-only system: ``predict_step(PromptBatch) -> list[TrajectoryRecord]``.

    ``teacher`` is a :class:`~blockdistill.models.adapter.BlockDiffusionLM` or any Denoiser (a toy
    joint); an ``nn.Module`` teacher is registered so it moves to the device, and is frozen.
    ``collector_kwargs`` go to :class:`TrajectoryCollector` (``policy``, ``top_k``, ...).
    """

    def __init__(self, teacher: nn.Module | Denoiser, **collector_kwargs: Any) -> None:
        super().__init__()
        if isinstance(teacher, nn.Module):
            teacher.requires_grad_(False)
            teacher.eval()
            self.teacher = teacher
        self.collector = TrajectoryCollector(teacher, **collector_kwargs)

    def predict_step(self, batch: PromptBatch, batch_idx: int, dataloader_idx: int = 0) -> list[TrajectoryRecord]:
        return self.collector.collect(batch)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, PromptBatch) else super().transfer_batch_to_device(
            batch, device, dataloader_idx)


class TrajectoryWriter(BasePredictionWriter):
    """Writes predicted records to ``directory`` as this rank's shards (see :mod:`~blockdistill.distill.writer`).

    ``producer`` (teacher weights hash, policy, decode settings) is recorded in the manifests, and a
    directory another producer wrote is refused; damaged shards already there are regenerated.

    Without a terminal, rank 0 logs a line per batch at most every 30 s (batches done of all, the
    writer's counts).

    On an exception (e.g. Ctrl-C) the records already decoded are flushed, so a resumed run
    redoes only the unfinished ones. Rank 0 merges the manifests into ``manifest.json`` at the end.
    """

    def __init__(self, directory: str | Path, shard_size: int = 256, filter: TrajectoryFilter | None = None,
                 meta: dict[str, Any] | None = None, producer: dict[str, Any] | None = None) -> None:
        super().__init__(write_interval="batch")
        self.directory, self.shard_size, self.filter, self.meta = Path(directory), shard_size, filter, meta
        self.producer = producer
        self.writer: ShardWriter | None = None
        self.summary: dict[str, Any] | None = None
        self._lines: LineProgress | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.writer = ShardWriter(self.directory, rank=trainer.global_rank, shard_size=self.shard_size,
                                  filter=self.filter, meta=self.meta, producer=self.producer,
                                  world_size=trainer.world_size)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.num_predict_batches[0] if trainer.num_predict_batches else None
        # Without a terminal (a log file), one line per batch at most every 30 s, on rank 0.
        self._lines = LineProgress(f"collect rank {trainer.global_rank}", total=None if total == float("inf") else
                                   int(total), unit="batches") if trainer.is_global_zero else None

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        self.writer.add(prediction)
        bar = trainer.progress_bar_callback
        if bar is not None and getattr(bar, "predict_progress_bar", None) is not None:
            bar.predict_progress_bar.set_postfix(self.writer.stats, refresh=False)
        if self._lines is not None:
            w = self.writer
            self._lines.update(1, note=f"kept {w.written + w.pending} ({w.written} in shards), "
                               + ", ".join(f"{k} {v}" for k, v in w.stats.items() if k != "written"))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.writer.close()
        trainer.strategy.barrier("trajectory-writer")
        if trainer.is_global_zero:
            self.summary = finalize_manifest(self.directory)
            print(f"collected {self.summary['num_examples']} trajectories into {len(self.summary['shards'])} shards "
                  f"under {self.directory} (dropped {self.summary['num_dropped']}: "
                  f"{self.summary['dropped_by_reason']})")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.writer is not None:
            self.writer.flush()
