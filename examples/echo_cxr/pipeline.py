"""Run ECHO stages in order, skipping those already finished (idempotent via a manifest).

The manifest (``<run_dir>/manifest.json``) records, per finished stage, a fingerprint of the
config sections it depends on. A rerun skips a stage whose fingerprint matches, reruns it when
its config changed, and ``force=True`` reruns everything. An interrupted stage is not in the
manifest; rerunning it resumes from its Lightning checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples.echo_cxr.config import STAGES, EchoConfig
from examples.echo_cxr.workspace import Workspace

DEPENDS: dict[str, tuple[str, ...]] = {
    "data": ("data", "model.kind", "model.pretrained"),
    "curate": (),
    "ar": ("data", "model", "ar"),
    "rad": ("data", "model", "ar", "rad"),
    "collect": ("data", "model", "ar", "rad", "collect"),
    "dcd": ("data", "model", "ar", "rad", "collect", "dcd"),
    "eval": ("data", "model", "ar", "rad", "collect", "dcd", "eval"),
    "report": ("data", "model", "ar", "rad", "collect", "dcd", "eval"),
}
"""Config sections each stage's output depends on (its fingerprint)."""


def stage_outputs(cfg: EchoConfig, ws: Workspace, stage: str) -> list[Path]:
    """What a stage writes; cleared before it reruns from scratch (changed config or --force)."""
    sizes = cfg.rad.block_sizes
    return {
        "data": [ws.data_dir, ws.tokenizer_dir],
        "curate": [ws.root / "curate-iu"],
        "ar": [ws.root / "ar"],
        "rad": [ws.root / f"rad_L{s}" for s in sizes],
        "collect": [ws.traj_dir(cfg.collect.block_size)],
        "dcd": [ws.root / f"dcd_L{cfg.collect.block_size}"],
        "eval": [ws.root / "eval", ws.root / "results.json"],
        "report": [ws.root / "report.md", ws.root / "plots"],
    }[stage]


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def fingerprint(cfg: EchoConfig, stage: str) -> str:
    """Hash of what ``stage``'s output depends on: its config sections, the seed, and, for runs
    on the trained tiny tokenizer, that tokenizer's recipe version (a new recipe changes every
    token id, so every stage from ``data`` on reruns)."""
    from examples.echo_cxr.data.tokenizer import TINY_TOKENIZER_VERSION

    payload = {k: _get(cfg, k) for k in DEPENDS[stage]}
    payload["seed"] = cfg.seed
    if "data" in DEPENDS[stage] and cfg.data.tokenizer is None and cfg.model.kind != "pretrained":
        payload["tiny_tokenizer"] = TINY_TOKENIZER_VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Manifest:
    """``{stage: {"status": "running" | "done", "fingerprint", "finished_at", "wall_s", "summary"}}``,
    written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def done(self, stage: str, fp: str) -> bool:
        entry = self.data.get(stage, {})
        return entry.get("status") == "done" and entry.get("fingerprint") == fp

    def resumable(self, stage: str, fp: str) -> bool:
        """An interrupted run of ``stage`` with the same settings: keep its checkpoints."""
        entry = self.data.get(stage, {})
        return entry.get("status") == "running" and entry.get("fingerprint") == fp

    def start(self, stage: str, fp: str) -> None:
        self.data[stage] = {"status": "running", "fingerprint": fp,
                            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._write()

    def record(self, stage: str, fp: str, wall_s: float, summary: dict[str, Any]) -> None:
        self.data[stage] = {"status": "done", "fingerprint": fp, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "wall_s": wall_s, "summary": summary}
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f, indent=2, default=str)
        os.replace(tmp, self.path)


def stage_functions() -> dict[str, Callable[[EchoConfig, Workspace], dict[str, Any]]]:
    from examples.echo_cxr import stages, stages_distill, stages_eval

    return {
        "data": stages.stage_data, "curate": stages.stage_curate, "ar": stages.stage_ar, "rad": stages.stage_rad,
        "collect": stages_distill.stage_collect, "dcd": stages_distill.stage_dcd,
        "eval": stages_eval.stage_eval, "report": stages_eval.stage_report,
    }


def run(cfg: EchoConfig, stages: Sequence[str] = STAGES, force: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` in pipeline order; returns the manifest."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ws = Workspace(cfg)
    ws.root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(ws.root / "manifest.json")
    fns = stage_functions()
    order = [s for s in STAGES if s in stages]
    for stage in order:
        if stage == "curate" and not cfg.curate_iu:
            continue
        fp = fingerprint(cfg, stage)
        if not force and manifest.done(stage, fp):
            log(f"[echo] {stage}: done earlier, skipped (use --force to rerun)")
            continue
        if not manifest.resumable(stage, fp) or force:
            # Start clean, unless an interrupted run with the same settings left checkpoints to
            # resume from: stale outputs of other settings must never be resumed.
            for path in stage_outputs(cfg, ws, stage):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        log(f"[echo] {stage}: {'resuming' if manifest.resumable(stage, fp) and not force else 'running'}")
        manifest.start(stage, fp)
        t0 = time.perf_counter()
        summary = fns[stage](cfg, ws)
        wall = time.perf_counter() - t0
        manifest.record(stage, fp, wall, summary)
        log(f"[echo] {stage}: finished in {wall:.1f}s")
    return manifest.data
