"""The ECHO distillation stages: ``collect`` (the teacher's trajectories) and ``dcd`` (the student).

``collect`` runs the library's predict-loop collector over training studies with the L=8
ECHO_Base as teacher (multi-step, tau 0.85), writing atomic, checksummed shards; an
interrupted run resumes without duplicating or losing studies. ``dcd`` trains ECHO, initialised
from its teacher, on those trajectories with commit-step targets, step weights and EOS CE.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from blockdistill.distill.batch import collate_records
from blockdistill.distill.dataset import TrajectoryDataset
from blockdistill.distill.schedules import schedule_from_name
from blockdistill.distill.targets import target_builder
from blockdistill.lightning.collect import CollectSystem, PromptDataModule, TrajectoryWriter
from blockdistill.lightning.dcd import DCDSystem
from blockdistill.losses.distill import divergence_from_name
from blockdistill.models.adapter import BlockDiffusionLM
from examples.echo_cxr.config import EchoConfig
from examples.echo_cxr.model import freeze_vision
from examples.echo_cxr.stages import _fit, _trainer_cfg
from examples.echo_cxr.workspace import Workspace


def _teacher(ws: Workspace, block_size: int) -> BlockDiffusionLM:
    path = ws.model_dir(f"rad_L{block_size}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} does not exist; run the 'rad' stage with block size {block_size} first")
    return BlockDiffusionLM.from_pretrained(path).eval()


class _Prompts(Sequence):
    """The DCD subset as collection prompts, built on access (images are not all held at once)."""

    def __init__(self, records, samples) -> None:
        self.ids = [r.key for r in records]  # CXRRecord keys: stable across runs, for resuming
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        return {"id": self.ids[i], "prompt_ids": s["prompt_ids"], "pixel_values": s["pixel_values"],
                "image_grid_thw": s["image_grid_thw"]}


def stage_collect(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """DCD phase 1: decode the DCD subset with the multi-step teacher, record trajectories."""
    c = cfg.collect
    teacher = _teacher(ws, c.block_size)
    prompts = _Prompts(ws.records("dcd"), ws.samples("dcd"))
    d = c.decode
    out_dir = ws.traj_dir(c.block_size)
    dm = PromptDataModule(prompts, pad_token_id=teacher.spec.pad_token_id, batch_size=c.batch_size,
                          skip_done_in=out_dir, ids=prompts.ids, num_workers=cfg.data.num_workers)
    system = CollectSystem(teacher, **d.collector_kwargs())
    writer = TrajectoryWriter(out_dir, shard_size=c.shard_size, filter=d.trajectory_filter(),
                              meta={"teacher": str(ws.model_dir(f"rad_L{c.block_size}")), "tau": d.tau})
    trainer = L.Trainer(accelerator=cfg.dcd.trainer.accelerator, devices=1, callbacks=[writer], logger=False,
                        enable_model_summary=False)
    trainer.predict(system, dm, return_predictions=False)
    summary = writer.summary or {}
    return {"examples": summary.get("num_examples"), "dropped": summary.get("num_dropped"),
            "skipped_as_done": dm.num_skipped}


def stage_dcd(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """DCD phase 2: the one-step student (ECHO) from the teacher's weights, on its trajectories."""
    c, dist = cfg.dcd, cfg.dcd.distill
    size = cfg.collect.block_size
    L.seed_everything(cfg.seed)
    teacher = _teacher(ws, size)
    if c.freeze_vision:
        freeze_vision(teacher.model)
    system = DCDSystem.from_teacher(
        teacher, c.optim, online=False, target=target_builder(dist.target),
        schedule=schedule_from_name(dist.schedule, dist.power),
        divergence=divergence_from_name(dist.divergence, dist.jsd_beta), lambda_eos=dist.lambda_eos,
        on_policy=cfg.collect.decode.relabel_kwargs() if dist.on_policy_fraction > 0 else None,
        on_policy_fraction=dist.on_policy_fraction, on_policy_start=dist.on_policy_start)
    if c.freeze_vision:
        freeze_vision(system.student.model)
    data = TrajectoryDataset(ws.traj_dir(size))
    if len(data) == 0:
        raise RuntimeError(f"{ws.traj_dir(size)} holds no trajectories (all dropped as degenerate?); see its "
                           "manifest.json, and train the teacher longer or relax collect.decode.repetition_*")
    loader = DataLoader(data, batch_size=c.batch_size, shuffle=True, drop_last=len(data) >= c.batch_size,
                        num_workers=cfg.data.num_workers, collate_fn=partial(collate_records, pad_token_id=teacher.spec.pad_token_id))
    name = f"dcd_L{size}"
    tcfg = _trainer_cfg(c.trainer, ws, name)
    wall = _fit(system, loader, tcfg)
    system.student.save_pretrained(ws.model_dir(name), tokenizer=ws.tokenizer(f"rad_L{size}"))
    return {"wall_s": wall, "steps": tcfg.max_steps, "trajectories": len(data)}
