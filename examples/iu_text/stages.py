"""The training stages of the text example: ar (stage 1), rad (stage 2), collect and dcd (stage 3).

Each is ``(cfg, ws) -> summary dict`` and calls the library's stage recipes
(:mod:`blockdistill.recipes`: ``train_ar``, ``train_rad``, ``collect``, ``train_dcd``), the same
functions the CLI and the ECHO example call; only the data (prompts, length-bucketed batches)
and the levers (frozen embeddings, precision) are this example's.
Training resumes from ``<stage>/train/checkpoints/last.ckpt``; collection resumes from its shards.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Sampler

from blockdistill.config import TrainerConfig
from blockdistill.data import BlockCollator
from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.recipes import (
    collect,
    train_ar,
    train_dcd,
    train_rad,
    trajectory_data,
    wrap_for_stage,
)
from examples.iu_text.config import TextConfig
from examples.iu_text.data import Workspace
from examples.iu_text.model import build_backbone, freeze_embeddings, training_precision


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length examples, in a seeded random order, reshuffled every epoch.

    Indices are shuffled, cut into pools of ``pool_batches`` batches, each pool sorted by length
    and cut into batches; then the batches are shuffled. Every index appears once per epoch (the
    last, short batch is dropped when ``drop_last``)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 50,
                 drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size, self.seed, self.pool = list(lengths), batch_size, seed, pool_batches
        self.drop_last = drop_last and len(self.lengths) >= batch_size
        self.epoch = 0

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        idx = list(range(len(self.lengths)))
        rng.shuffle(idx)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(idx), size):
            pool = sorted(idx[start:start + size], key=lambda i: self.lengths[i])
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        self.epoch += 1
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def _loader(data: list[dict[str, Any]], collate, batch_size: int, bucketing: bool, seed: int) -> DataLoader:
    if bucketing:
        lengths = [len(s["prompt_ids"]) + len(s["response_ids"]) for s in data]
        return DataLoader(data, batch_sampler=LengthBucketSampler(lengths, batch_size, seed), collate_fn=collate)
    return DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate,
                      drop_last=len(data) >= batch_size)


def _trainer_cfg(cfg: TextConfig, t: TrainerConfig, ws: Workspace, name: str) -> TrainerConfig:
    return replace(t, default_root_dir=str(ws.train_dir(name)), seed=cfg.seed,
                   precision=training_precision(cfg.model, t.accelerator))


def _csv_logger(tcfg: TrainerConfig):
    """The stage's CSV log (``<train dir>/logs/version_0/metrics.csv``), appended to on resume."""
    from blockdistill.lightning.logs import run_logger

    return run_logger(tcfg.default_root_dir)


def _levers(cfg: TextConfig, model) -> dict[str, Any]:
    frozen = freeze_embeddings(model) if cfg.model.freeze_embeddings else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"frozen_params": frozen, "trainable_params": trainable}


def stage_ar(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    """Stage 1: supervised fine-tune on the task -> the example's ECHO_AR (``ar/model``), through
    :func:`blockdistill.recipes.train_ar`."""
    L.seed_everything(cfg.seed)
    tok = ws.tokenizer()
    model = build_backbone(cfg.model, tok, seed=cfg.seed)
    levers = _levers(cfg, model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    loader = _loader(ws.samples("train"), BlockCollator(1, tok.eos_token_id, pad), cfg.ar.batch_size,
                     cfg.ar.length_bucketing, cfg.seed)
    tcfg = _trainer_cfg(cfg, cfg.ar.trainer, ws, "ar")
    res = train_ar(model, loader, optim=cfg.ar.optim, trainer=tcfg, out_dir=ws.model_dir("ar"), tokenizer=tok,
                   logger=_csv_logger(tcfg))
    return {"wall_s": res.wall_s, "steps": res.steps, "precision": tcfg.precision, **levers}


def stage_rad(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    """Stage 2: RAD from the AR model, one block model per size (``rad_L{L}/model``), with shift,
    through :func:`blockdistill.recipes.train_rad`."""
    from transformers import AutoModelForCausalLM

    out: dict[str, Any] = {}
    for size, name in ws.pending_sizes("rad", cfg.rad.block_sizes, out):
        L.seed_everything(cfg.seed)
        tok = ws.tokenizer()
        model = AutoModelForCausalLM.from_pretrained(ws.model_dir("ar"))
        bd: BlockDiffusionLM = wrap_for_stage(model, tok, block_size=size, shift=cfg.rad.shift,
                                              allow_block_size_change=True)
        levers = _levers(cfg, bd.model)
        loader = _loader(ws.samples("train"), BlockCollator(size, bd.spec.eos_token_id, bd.spec.pad_token_id),
                         cfg.rad.batch_size, cfg.rad.length_bucketing, cfg.seed)
        tcfg = _trainer_cfg(cfg, replace(cfg.rad.trainer, max_steps=cfg.rad.steps_for(size)), ws, name)
        res = train_rad(bd, loader, optim=cfg.rad.optim, noise=cfg.rad.noise, trainer=tcfg, layout=cfg.rad.layout,
                        out_dir=ws.model_dir(name), tokenizer=tok, logger=_csv_logger(tcfg))
        ws.mark_finished(name, {"wall_s": res.wall_s})
        out[name] = {"wall_s": res.wall_s, "steps": res.steps, "precision": tcfg.precision, **levers}
    return out


def _teacher(ws: Workspace, block_size: int) -> BlockDiffusionLM:
    path = ws.model_dir(f"rad_L{block_size}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} does not exist; run the 'rad' stage with block size {block_size} first")
    return BlockDiffusionLM.from_pretrained(path).eval()


def stage_collect(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    """DCD phase 1: the multi-step L=8 teacher decodes the DCD subset and records its trajectories
    (:func:`blockdistill.recipes.collect`, on the DCD trainer's accelerator, resumable)."""
    from blockdistill.lightning.collect import PromptDataModule

    c = cfg.collect
    teacher = _teacher(ws, c.block_size)
    prompts = [{"id": s["key"], "prompt_ids": s["prompt_ids"]} for s in ws.samples("dcd")[: c.n_prompts]]
    out_dir = ws.traj_dir(c.block_size)
    dm = PromptDataModule(prompts, pad_token_id=teacher.spec.pad_token_id, batch_size=c.batch_size,
                          skip_done_in=out_dir, ids=[p["id"] for p in prompts])
    tcfg = replace(cfg.dcd.trainer, devices=1, strategy="auto", precision="32-true",
                   default_root_dir=str(ws.train_dir(f"collect_L{c.block_size}")))
    t0 = time.perf_counter()
    summary = collect(teacher, dm, decode=c.decode, trainer=tcfg, out_dir=out_dir, shard_size=c.shard_size,
                      meta={"teacher": str(ws.model_dir(f"rad_L{c.block_size}"))}) or {}
    return {"examples": summary.get("num_examples"), "dropped": summary.get("num_dropped"),
            "skipped_as_done": dm.num_skipped, "wall_s": time.perf_counter() - t0}


def stage_dcd(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    """DCD phase 2: the one-step student trained in place of its teacher's weights, on the
    teacher's trajectories (:func:`blockdistill.recipes.train_dcd`, offline)."""
    c, size = cfg.dcd, cfg.collect.block_size
    L.seed_everything(cfg.seed)
    teacher = _teacher(ws, size)
    data = trajectory_data(ws.traj_dir(size), pad_token_id=teacher.spec.pad_token_id, batch_size=c.batch_size)
    name = f"dcd_L{size}"
    tcfg = _trainer_cfg(cfg, c.trainer, ws, name)
    levers: dict[str, Any] = {}

    def prepare(student: BlockDiffusionLM) -> None:
        levers.update(_levers(cfg, student.model))

    res = train_dcd(teacher, data, optim=c.optim, distill=c.distill, trainer=tcfg, online=False,
                    decode=cfg.collect.decode if c.distill.on_policy_fraction > 0 else None,
                    prepare_student=prepare, out_dir=ws.model_dir(name), tokenizer=ws.tokenizer(f"rad_L{size}"),
                    logger=_csv_logger(tcfg))
    return {"wall_s": res.wall_s, "steps": res.steps, "trajectories": len(data.train), "precision": tcfg.precision,
            **levers}
