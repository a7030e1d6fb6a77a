"""Run the text example's stages in order, skipping finished ones (a per-stage manifest).

The manifest (``<run_dir>/manifest.json``, the ECHO example's :class:`Manifest`) records, per
finished stage, a fingerprint of the config sections its output depends on. A rerun skips a
stage whose fingerprint matches, reruns one whose config changed (clearing its outputs first),
and resumes an interrupted one from its checkpoints or shards; ``force=True`` reruns everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples.echo_cxr.pipeline import Manifest
from examples.iu_text.config import STAGES, TextConfig
from examples.iu_text.data import Workspace

DEPENDS: dict[str, tuple[str, ...]] = {
    "data": ("data", "model.kind", "model.path"),
    "ar": ("data", "model", "ar"),
    "rad": ("data", "model", "ar", "rad"),
    "collect": ("data", "model", "ar", "rad", "collect"),
    "dcd": ("data", "model", "ar", "rad", "collect", "dcd"),
    "eval": ("data", "model", "ar", "rad", "collect", "dcd", "eval"),
    "report": ("data", "model", "ar", "rad", "collect", "dcd", "eval"),
}
"""Config sections each stage's output depends on (its fingerprint)."""


def stage_outputs(cfg: TextConfig, ws: Workspace, stage: str) -> list[Path]:
    """What a stage writes; cleared before it reruns from scratch."""
    return {
        "data": [ws.curate_dir, ws.data_dir, ws.tokenizer_dir],
        "ar": [ws.root / "ar"],
        "rad": [ws.root / f"rad_L{s}" for s in cfg.rad.block_sizes],
        "collect": [ws.traj_dir(cfg.collect.block_size)],
        "dcd": [ws.root / f"dcd_L{cfg.collect.block_size}"],
        "eval": [ws.root / "eval", ws.root / "results.json"],
        "report": [ws.root / "report.md", ws.root / "plots"],
    }[stage]


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def fingerprint(cfg: TextConfig, stage: str) -> str:
    """Hash of the config sections ``stage`` depends on, the seed and the tiny tokenizer's recipe."""
    from examples.iu_text.prompts import INSTRUCTION, SYSTEM, TINY_TOKENIZER_VERSION

    payload = {k: _get(cfg, k) for k in DEPENDS[stage]}
    payload.update(seed=cfg.seed, prompt=[SYSTEM, INSTRUCTION])
    if cfg.model.kind == "tiny":
        payload["tiny_tokenizer"] = TINY_TOKENIZER_VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_functions() -> dict[str, Callable[..., dict[str, Any]]]:
    from examples.iu_text import data, evaluate, report, stages

    return {"data": data.stage_data, "ar": stages.stage_ar, "rad": stages.stage_rad, "collect": stages.stage_collect,
            "dcd": stages.stage_dcd, "eval": evaluate.stage_eval, "report": report.stage_report}


def run(cfg: TextConfig, stages: Sequence[str] = STAGES, force: bool = False, started_at: float | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` in pipeline order; returns the manifest. ``started_at`` (a ``time.time()``)
    is when the command began, set-up included: the report stage records the wall time since."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ws = Workspace(cfg)
    ws.root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(ws.root / "manifest.json")
    fns = stage_functions()
    for stage in [s for s in STAGES if s in stages]:
        fp = fingerprint(cfg, stage)
        if not force and manifest.done(stage, fp):
            log(f"[iu_text] {stage}: done earlier, skipped (use --force to rerun)")
            continue
        resuming = manifest.resumable(stage, fp) and not force
        if not resuming:  # stale outputs of other settings are never resumed
            for path in stage_outputs(cfg, ws, stage):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        log(f"[iu_text] {stage}: {'resuming' if resuming else 'running'}")
        manifest.start(stage, fp)
        t0 = time.perf_counter()
        if stage == "report":
            command = {} if started_at is None else {"command_s": time.time() - started_at}
            summary = fns[stage](cfg, ws, command)
        else:
            summary = fns[stage](cfg, ws)
        wall = time.perf_counter() - t0
        manifest.record(stage, fp, wall, summary)
        log(f"[iu_text] {stage}: finished in {wall:.1f}s")
    return manifest.data
