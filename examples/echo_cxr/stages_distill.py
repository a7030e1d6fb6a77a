"""The ECHO distillation stages: ``collect`` (the teacher's trajectories) and ``dcd`` (the student).

``collect`` runs the library's predict-loop collector over training studies with the L=8
ECHO_Base as teacher (multi-step, tau 0.85), writing atomic, checksummed shards; an
interrupted run resumes without duplicating or losing studies. ``dcd`` trains ECHO, initialised
from its teacher, on those trajectories with commit-step targets, step weights and EOS CE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L

from blockdistill.lightning.collect import PromptDataModule
from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.recipes import collect, train_dcd, trajectory_data
from examples.echo_cxr.config import EchoConfig
from examples.echo_cxr.model import freeze_vision
from examples.echo_cxr.stages import _trainer_cfg, csv_logger
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
    """DCD phase 1: decode the DCD subset with the multi-step teacher, record trajectories, on
    the devices, strategy and precision of ``collect.trainer``."""
    c = cfg.collect
    teacher = _teacher(ws, c.block_size)
    prompts = _Prompts(ws.records("dcd"), ws.samples("dcd"))
    out_dir = ws.traj_dir(c.block_size)
    dm = PromptDataModule(prompts, pad_token_id=teacher.spec.pad_token_id, batch_size=c.batch_size,
                          skip_done_in=out_dir, ids=prompts.ids, num_workers=cfg.data.num_workers)
    summary = collect(teacher, dm, decode=c.decode, trainer=_trainer_cfg(c.trainer, ws, f"collect_L{c.block_size}"),
                      out_dir=out_dir, shard_size=c.shard_size,
                      meta={"teacher": str(ws.model_dir(f"rad_L{c.block_size}"))}) or {}
    return {"examples": summary.get("num_examples"), "dropped": summary.get("num_dropped"),
            "skipped_as_done": dm.num_skipped}


def stage_dcd(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    """DCD phase 2: the one-step student (ECHO), trained in place of its teacher's weights on the
    teacher's trajectories (a frozen teacher copy is kept only for on-policy steps)."""
    c = cfg.dcd
    size = cfg.collect.block_size
    L.seed_everything(cfg.seed)
    teacher = _teacher(ws, size)
    data = trajectory_data(ws.traj_dir(size), pad_token_id=teacher.spec.pad_token_id, batch_size=c.batch_size,
                           num_workers=cfg.data.num_workers)
    name = f"dcd_L{size}"
    tcfg = _trainer_cfg(c.trainer, ws, name)
    res = train_dcd(teacher, data, optim=c.optim, distill=c.distill, trainer=tcfg, online=False,
                    decode=cfg.collect.decode, lora=c.lora,
                    prepare_student=(lambda s: freeze_vision(s.model)) if c.freeze_vision else None,
                    out_dir=ws.model_dir(name), tokenizer=ws.tokenizer(f"rad_L{size}"), logger=csv_logger(tcfg))
    return {"wall_s": res.wall_s, "steps": tcfg.max_steps, "trajectories": len(data.train)}
