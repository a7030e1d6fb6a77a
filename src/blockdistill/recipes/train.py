"""The training stages as functions of explicit arguments: AR (stage 1) and RAD (stage 2).

Each recipe takes the model it trains, its data (a ``LightningDataModule`` or ``DataLoader``),
the optimiser and trainer settings, and where to save the result; it builds the Lightning
system and trainer, resumes from ``<trainer.default_root_dir>/checkpoints/last.ckpt`` when an
interrupted run left one, trains, and saves on global rank zero. The caller seeds the run and
builds the model (``L.seed_everything`` first, so a random init is reproducible). Both the CLI
and ``examples/echo_cxr`` call these, so the two entry points cannot drift apart.

Example::

    L.seed_everything(0)
    bd = wrap_for_stage(load_backbone(model_cfg), tok, block_size=4)
    data = block_data(JsonlExamples("train.jsonl", tok), block_size=4, eos_token_id=bd.spec.eos_token_id,
                      pad_token_id=bd.spec.pad_token_id, batch_size=8)
    train_rad(bd, data, optim=OptimConfig(), noise=NoiseConfig(), trainer=TrainerConfig(max_steps=200),
              out_dir="runs/rad/model", tokenizer=tok)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
from torch import nn
from torch.utils.data import DataLoader, Dataset

from blockdistill.config import LoraConfig, NoiseConfig, OptimConfig, TrainerConfig
from blockdistill.data import BlockCollator
from blockdistill.lightning import ARSystem, BlockDataModule, RADSystem, build_trainer, resume_path
from blockdistill.lightning.trainer import training_settings
from blockdistill.models.adapter import BlockDiffusionLM, atomic_save_pretrained
from blockdistill.models.provenance import mark_trained

__all__ = ["StageResult", "block_data", "fit", "save_trained", "train_ar", "train_rad"]

Data = L.LightningDataModule | DataLoader


@dataclass
class StageResult:
    """What a training recipe ran: the Lightning trainer and system, and the wall time of ``fit``."""

    trainer: L.Trainer
    """The trainer (``trainer.is_global_zero`` tells the saving rank)."""
    system: L.LightningModule
    """The trained system (its ``net`` is the trained model)."""
    wall_s: float
    """Seconds spent in ``trainer.fit``."""

    @property
    def steps(self) -> int:
        """Optimiser steps done, counting those of a resumed run."""
        return int(self.trainer.global_step)


def block_data(examples: Sequence | Dataset, *, block_size: int, eos_token_id: int, pad_token_id: int,
               batch_size: int, num_workers: int = 0, max_length: int | None = None) -> BlockDataModule:
    """Training examples (``prompt_ids``, ``response_ids``, optional vision) collated for a stage
    of block size ``block_size`` (1 for AR), shuffled, whole batches only."""
    coll = BlockCollator(block_size, eos_token_id, pad_token_id, max_length=max_length)
    return BlockDataModule(examples, coll, batch_size=batch_size, num_workers=num_workers)


def fit(system: L.LightningModule, data: Data, trainer: TrainerConfig, *, logger: Any = None,
        callbacks: list | None = None) -> StageResult:
    """Train ``system`` with :func:`~blockdistill.lightning.build_trainer` settings ``trainer``,
    resuming an interrupted run of the same ``default_root_dir`` exactly (data order, RNG; a
    changed training setting is refused unless ``trainer.allow_config_change``). ``logger``:
    None = the run's CSV log (``<default_root_dir>/logs/version_0/metrics.csv``), False = none."""
    t0 = time.perf_counter()
    if getattr(data, "seed", 0) is None:
        data.seed = trainer.seed
    tr = build_trainer(trainer, callbacks=callbacks, logger=logger,
                       settings=training_settings(system, data, trainer))
    tr.fit(system, data, ckpt_path=resume_path(trainer))
    return StageResult(tr, system, time.perf_counter() - t0)


def save_trained(model: BlockDiffusionLM, out_dir: str | os.PathLike, *, tokenizer: Any = None,
                 lora: LoraConfig | None = None) -> None:
    """Save a trained block model to ``out_dir``: with ``lora``, the adapter alone first to
    ``lora.adapter_dir`` when set, then the merged model (what the samplers and the next stage
    load)."""
    if lora is not None and lora.adapter_dir is not None:
        model.save_pretrained(lora.adapter_dir, tokenizer=tokenizer, lora="adapter")
    model.save_pretrained(out_dir, tokenizer=tokenizer)


def train_ar(model: nn.Module, data: Data, *, optim: OptimConfig, trainer: TrainerConfig,
             attn_backend: str = "sdpa", out_dir: str | os.PathLike | None = None, tokenizer: Any = None,
             logger: Any = None) -> StageResult:
    """Stage 1: AR continued pre-training of the plain backbone ``model`` (next-token CE on the
    response). Saved with ``save_pretrained`` (and ``tokenizer``) to ``out_dir`` when given."""
    if trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    res = fit(ARSystem(model.train(), optim, attn_backend), data, trainer, logger=logger)
    if out_dir is not None and res.trainer.is_global_zero:
        atomic_save_pretrained(model, out_dir, tokenizer=tokenizer)
    return res


def train_rad(model: BlockDiffusionLM, data: Data, *, optim: OptimConfig, noise: NoiseConfig, trainer: TrainerConfig,
              layout: str = "rad", lora: LoraConfig | None = None, out_dir: str | os.PathLike | None = None,
              tokenizer: Any = None, logger: Any = None) -> StageResult:
    """Stage 2: RAD adaptation of the block-diffusion model ``model`` (``layout="full_dup"``: the
    duplication baseline; ``lora``: LoRA adapters instead of every weight). Noise is drawn from
    ``trainer.seed``; the model, with its block rules (merged, with LoRA), is saved to
    ``out_dir`` when given (:func:`save_trained`)."""
    if trainer.gradient_checkpointing:
        model.model.gradient_checkpointing_enable()
    system = RADSystem(model.train(), optim, noise, layout, seed=trainer.seed, lora=lora)
    res = fit(system, data, trainer, logger=logger)
    mark_trained(model, "rad")
    if out_dir is not None and res.trainer.is_global_zero:
        save_trained(model, out_dir, tokenizer=tokenizer, lora=lora)
    return res
