"""DCD sub-commands of the ``blockdistill`` CLI (registered through ``cli.PLUGIN_MODULES``).

    blockdistill collect   --config configs/tiny/collect.yaml model.pretrained=runs/rad/model trainer.devices=2
    blockdistill train-dcd --config configs/tiny/dcd.yaml trajectories=runs/dcd/trajectories   # offline
    blockdistill train-dcd --config configs/tiny/dcd.yaml data.train_file=prompts.jsonl          # online

``collect`` decodes every prompt with the multi-step teacher (through Lightning's predict
loop, on any number of devices) into resumable checksummed shards; re-running it finishes an
interrupted collection. ``train-dcd`` trains the one-step student, a copy of the teacher,
either on those shards or on-policy with the teacher decoding inside each step.
"""

from __future__ import annotations

import functools
from pathlib import Path

from blockdistill.cli import _save_config, _tokenizer_for, command
from blockdistill.config import ConfigError
from blockdistill.config.distill import (
    CollectConfig,
    DCDTrainConfig,
    DistillConfig,
)

__all__ = ["collect", "train_dcd"]


def _teacher(cfg, tok):
    """The teacher as a BlockDiffusionLM, in eval mode, with the block rules it was trained with
    (a mismatching ``block.block_size`` or ``block.shift`` is a ConfigError naming the field)."""
    from blockdistill.models.adapter import wrap_for_stage
    from blockdistill.models.backbones import load_backbone

    model = load_backbone(cfg.model, cfg.trainer.seed)
    return wrap_for_stage(model, tok, cfg.block).eval()


def _prompts(cfg, tok):
    from blockdistill.distill.prompts import read_prompts

    if cfg.data.train_file is None:
        raise ConfigError("data.train_file: is required (a JSONL of prompts)")
    return read_prompts(cfg.data.train_file, tok)


@command("collect", CollectConfig, "DCD phase 1: record the teacher's trajectories into sharded files")
def collect(cfg: CollectConfig) -> None:
    import lightning as L

    from blockdistill.lightning.collect import CollectSystem, PromptDataModule, TrajectoryWriter

    L.seed_everything(cfg.trainer.seed)
    tok = _tokenizer_for(cfg)
    teacher = _teacher(cfg, tok)
    out = Path(cfg.output_dir)
    dm = PromptDataModule(_prompts(cfg, tok), pad_token_id=teacher.spec.pad_token_id, batch_size=cfg.data.batch_size,
                          num_workers=cfg.data.num_workers, skip_done_in=out, shuffle=False)
    system = CollectSystem(teacher, **cfg.decode.collector_kwargs())
    meta = {"teacher": cfg.model.pretrained, "block_size": teacher.block_size, "tau": cfg.decode.tau,
            "top_k": cfg.decode.top_k, "max_new_tokens": cfg.decode.max_new_tokens}
    writer = TrajectoryWriter(out, shard_size=cfg.shard_size, filter=cfg.decode.trajectory_filter(), meta=meta)
    t = cfg.trainer
    trainer = L.Trainer(accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, precision=t.precision,
                        callbacks=[writer], logger=False, enable_progress_bar=t.enable_progress_bar,
                        enable_model_summary=False, default_root_dir=t.default_root_dir)
    trainer.predict(system, dm, return_predictions=False)
    if trainer.is_global_zero:
        (out / "blockdistill_collect.yaml").write_text(_yaml(cfg))


def _yaml(cfg) -> str:
    from blockdistill.config import to_yaml

    return to_yaml(cfg)


def _divergence(d: DistillConfig):
    from blockdistill.losses.distill import divergence_from_name

    return divergence_from_name(d.divergence, d.jsd_beta)


@command("train-dcd", DCDTrainConfig, "stage 3: DCD, distill the one-step student (offline shards or online)")
def train_dcd(cfg: DCDTrainConfig) -> None:
    import lightning as L

    from blockdistill.distill.batch import collate_records
    from blockdistill.distill.dataset import TrajectoryDataset
    from blockdistill.distill.schedules import schedule_from_name
    from blockdistill.distill.targets import target_builder
    from blockdistill.lightning import BlockDataModule, build_trainer, resume_path
    from blockdistill.lightning.collect import PromptDataModule
    from blockdistill.lightning.dcd import DCDSystem

    L.seed_everything(cfg.trainer.seed)
    tok = _tokenizer_for(cfg)
    teacher = _teacher(cfg, tok)
    pad = teacher.spec.pad_token_id
    parts = dict(target=target_builder(cfg.distill.target),
                 schedule=schedule_from_name(cfg.distill.schedule, cfg.distill.power),
                 divergence=_divergence(cfg.distill), lambda_eos=cfg.distill.lambda_eos,
                 on_policy_fraction=cfg.distill.on_policy_fraction, on_policy_start=cfg.distill.on_policy_start)
    if cfg.trajectories is not None:
        records = TrajectoryDataset(cfg.trajectories, verify=cfg.verify_checksums)
        if len(records) == 0:
            raise ConfigError(f"trajectories: {cfg.trajectories} holds no records")
        dm = BlockDataModule(records, functools.partial(collate_records, pad_token_id=pad),
                             batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
        if cfg.distill.on_policy_fraction > 0:  # the teacher relabels the student's decodes: keep both
            system = DCDSystem.from_teacher(teacher, cfg.optim, online=False, on_policy=cfg.decode.relabel_kwargs(), **parts)
        else:
            # Offline, the loaded weights are the teacher's: train them directly (no second copy in memory).
            system = DCDSystem(teacher.train().requires_grad_(True), cfg.optim, **parts)
    else:
        dm = PromptDataModule(_prompts(cfg, tok), pad_token_id=pad, batch_size=cfg.data.batch_size,
                              num_workers=cfg.data.num_workers, shuffle=True)
        collect_kw = {**cfg.decode.collector_kwargs(), "filter": cfg.decode.trajectory_filter()}
        system = DCDSystem.from_teacher(teacher, cfg.optim, online=True, collect=collect_kw,
                                        on_policy=cfg.decode.relabel_kwargs() if cfg.distill.on_policy_fraction > 0 else None,
                                        **parts)
    if cfg.trainer.gradient_checkpointing:
        system.student.model.gradient_checkpointing_enable()
    trainer = build_trainer(cfg.trainer)
    trainer.fit(system, dm, ckpt_path=resume_path(cfg.trainer))
    if trainer.is_global_zero:
        out = Path(cfg.output_dir)
        system.student.save_pretrained(out, tokenizer=tok)
        _save_config(cfg, out)
        print(f"saved one-step student to {out}")
