"""The DCD stages as functions of explicit arguments: trajectory collection and the student.

- :func:`collect`: the multi-step teacher decodes every prompt through Lightning's predict loop,
  on the devices, strategy and precision of ``trainer``, into resumable checksummed shards;
- :func:`train_dcd`: the one-step student, offline on those shards (:func:`trajectory_data`) or
  online (the teacher decodes each batch's prompts inside the step). Offline without on-policy
  steps the student *is* the loaded teacher weights: no second copy in memory (a 7B teacher
  would double it); online or on-policy the frozen teacher is kept beside a copy.

Both the CLI (``blockdistill collect`` / ``train-dcd``) and ``examples/echo_cxr`` call these.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

from blockdistill.config import (
    ConfigError,
    DistillConfig,
    LoraConfig,
    OptimConfig,
    TeacherDecodeConfig,
    TrainerConfig,
)
from blockdistill.lightning import BlockDataModule
from blockdistill.lightning.collect import CollectSystem, PromptDataModule, TrajectoryWriter
from blockdistill.lightning.dcd import DCDSystem
from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.models.provenance import mark_trained
from blockdistill.recipes.train import Data, StageResult, fit, save_trained

__all__ = ["collect", "collection_producer", "predict_trainer", "train_dcd", "trajectory_data"]


def predict_trainer(trainer: TrainerConfig, callbacks: list | None = None) -> L.Trainer:
    """A prediction-only ``lightning.Trainer`` on ``trainer``'s accelerator, devices, strategy and
    precision (no logger, no checkpoints)."""
    return L.Trainer(accelerator=trainer.accelerator, devices=trainer.devices, strategy=trainer.strategy,
                     precision=trainer.precision, callbacks=callbacks or [], logger=False,
                     enable_progress_bar=trainer.enable_progress_bar, enable_model_summary=False,
                     default_root_dir=trainer.default_root_dir)


def collect(teacher: BlockDiffusionLM, prompts: PromptDataModule, *, decode: TeacherDecodeConfig,
            trainer: TrainerConfig, out_dir: str | os.PathLike, shard_size: int = 256,
            meta: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """DCD phase 1: decode ``prompts`` with ``teacher`` as ``decode`` says, into shards under
    ``out_dir`` (``prompts`` built with ``skip_done_in=out_dir`` resumes an interrupted run).

    ``meta`` (e.g. the teacher's path) is stored in the manifest next to the decoding settings.
    The producer (:func:`collection_producer`: the teacher's weights hash, its block rules, the
    policy and every decode setting) is recorded too, and a resume into an ``out_dir`` another
    producer wrote is refused (:class:`~blockdistill.distill.writer.CollectionMismatchError`).
    Returns the merged manifest on global rank zero, else None.
    """
    meta = {"block_size": teacher.block_size, "tau": decode.tau, "top_k": decode.top_k,
            "max_new_tokens": decode.max_new_tokens, "cache": decode.cache, **(meta or {})}
    writer = TrajectoryWriter(out_dir, shard_size=shard_size, filter=decode.trajectory_filter(), meta=meta,
                              producer=collection_producer(teacher, decode))
    tr = predict_trainer(trainer, callbacks=[writer])
    tr.predict(CollectSystem(teacher, **decode.collector_kwargs()), prompts, return_predictions=False)
    return writer.summary


def collection_producer(teacher: BlockDiffusionLM, decode: TeacherDecodeConfig) -> dict[str, Any]:
    """What makes two collections' trajectories comparable: the teacher's weights
    (:func:`~blockdistill.utils.checksum.weights_sha256`), its block rules, the unmasking policy
    and every ``decode`` setting (flat ``decode.<field>`` keys)."""
    from dataclasses import asdict

    from blockdistill.utils.checksum import weights_sha256

    return {"teacher_weights_sha256": weights_sha256(teacher.model),
            **{f"block.{k}": v for k, v in sorted(asdict(teacher.spec).items())},
            "policy": repr(decode.policy()),
            **{f"decode.{k}": v for k, v in sorted(asdict(decode).items())}}


def trajectory_data(directory: str | os.PathLike, *, pad_token_id: int, batch_size: int, num_workers: int = 0,
                    verify: bool = True) -> BlockDataModule:
    """Collected trajectories as shuffled training batches (every shard's sha256 checked first
    with ``verify``). An empty collection is a :class:`ConfigError` naming ``trajectories``."""
    from blockdistill.distill.batch import collate_records
    from blockdistill.distill.dataset import TrajectoryDataset

    records = TrajectoryDataset(directory, verify=verify)
    if len(records) == 0:
        raise ConfigError(f"trajectories: {Path(directory)} holds no records (all dropped as degenerate? see its "
                          "manifest.json; train the teacher longer or relax the repetition filter)")
    return BlockDataModule(records, functools.partial(collate_records, pad_token_id=pad_token_id),
                           batch_size=batch_size, num_workers=num_workers)


def train_dcd(teacher: BlockDiffusionLM, data: Data, *, optim: OptimConfig, distill: DistillConfig,
              trainer: TrainerConfig, online: bool, decode: TeacherDecodeConfig | None = None,
              lora: LoraConfig | None = None, prepare_student: Callable[[BlockDiffusionLM], Any] | None = None,
              out_dir: str | os.PathLike | None = None, tokenizer: Any = None, logger: Any = None) -> StageResult:
    """Stage 3: distill the one-step student from ``teacher``.

    Args:
        teacher: the multi-step block-diffusion model (its block rules are the student's).
        data: offline, collated trajectory records (:func:`trajectory_data`); online, a
            :class:`PromptDataModule` the teacher decodes inside each step.
        optim, trainer: optimiser and trainer settings.
        distill: target, schedule, divergence, EOS weight and the on-policy share.
        online: decode the prompts of ``data`` with the teacher in the step.
        decode: how the teacher decodes (online collection and on-policy relabelling; required
            for either).
        lora: train LoRA adapters on the student instead of every weight (saved merged).
        prepare_student: called on the student once its gradients are on, before training (e.g.
            freeze a vision encoder).
        out_dir, tokenizer: where the student is saved (global rank zero), with the tokenizer.
    """
    from blockdistill.distill.schedules import schedule_from_name
    from blockdistill.distill.targets import target_builder
    from blockdistill.losses.distill import divergence_from_name

    on_policy = distill.on_policy_fraction > 0
    if (online or on_policy) and decode is None:
        raise ValueError("train_dcd: online collection and on-policy steps need decode=TeacherDecodeConfig(...)")
    parts = dict(target=target_builder(distill.target), schedule=schedule_from_name(distill.schedule, distill.power),
                 divergence=divergence_from_name(distill.divergence, distill.jsd_beta), lambda_eos=distill.lambda_eos,
                 on_policy_fraction=distill.on_policy_fraction, on_policy_start=distill.on_policy_start,
                 lora=lora)
    relabel = decode.relabel_kwargs() if on_policy else None
    if online:
        collect_kw = {**decode.collector_kwargs(), "filter": decode.trajectory_filter()}
        system = DCDSystem.from_teacher(teacher, optim, online=True, collect=collect_kw, on_policy=relabel, **parts)
    elif on_policy:  # the teacher relabels the student's decodes: keep both
        system = DCDSystem.from_teacher(teacher, optim, online=False, on_policy=relabel, **parts)
    else:  # offline, the loaded weights are the teacher's: train them directly (no second copy in memory)
        system = DCDSystem(teacher.train().requires_grad_(True), optim, **parts)
    if prepare_student is not None:
        prepare_student(system.student)
    if trainer.gradient_checkpointing:
        system.student.model.gradient_checkpointing_enable()
    res = fit(system, data, trainer, logger=logger)
    mark_trained(system.student, "dcd")
    if out_dir is not None and res.trainer.is_global_zero:
        save_trained(system.student, out_dir, tokenizer=tokenizer, lora=lora)
    return res
