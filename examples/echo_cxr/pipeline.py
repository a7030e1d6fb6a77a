"""Run ECHO stages in order, skipping those already finished (idempotent via a manifest).

The manifest (``<run_dir>/manifest.json``) records, per finished stage, a fingerprint of the
config sections it depends on. A rerun skips a stage whose fingerprint matches, reruns it when
its config changed, and ``force=True`` reruns everything. An interrupted stage is not in the
manifest; rerunning it resumes from its Lightning checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from examples.echo_cxr.config import STAGES, EchoConfig
from examples.echo_cxr.workspace import Workspace


def chained_depends(data: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Fingerprint sections of the stage chain both examples share: ``data`` hashes ``data``, and
    each later stage the data, the model and the sections of every stage up to itself."""
    out, chain = {"data": data}, ("data", "model")
    for stage in ("ar", "rad", "collect", "dcd", "eval"):
        chain = (*chain, stage)
        out[stage] = chain
    out["report"] = chain
    return out


DEPENDS: dict[str, tuple[str, ...]] = {"curate": (), **chained_depends(("data", "model.kind", "model.pretrained"))}
"""Config sections each stage's output depends on (its fingerprint)."""


def stage_outputs(cfg: EchoConfig, ws: Workspace, stage: str) -> list[Path]:
    """What a stage writes; cleared before it reruns from scratch (changed config or --force)."""
    if stage == "data":
        return [ws.data_dir, ws.tokenizer_dir]
    if stage == "curate":
        return [ws.root / "curate-iu"]
    return ws.stage_outputs(stage)


def config_value(cfg: Any, dotted: str) -> Any:
    """``cfg.a.b`` for ``"a.b"``, dataclasses as plain dicts (what a fingerprint hashes)."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg


def config_fingerprint(cfg: Any, sections: Sequence[str], **extra: Any) -> str:
    """16 hex digits of SHA-256 over the config ``sections`` (dotted names) and ``extra``."""
    payload = {k: config_value(cfg, k) for k in sections}
    payload.update(extra)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(cfg: EchoConfig, stage: str) -> str:
    """Hash of what ``stage``'s output depends on: its config sections, the seed, and, for runs
    on the trained tiny tokenizer, that tokenizer's recipe version (a new recipe changes every
    token id, so every stage from ``data`` on reruns)."""
    from examples.echo_cxr.data.tokenizer import TINY_TOKENIZER_VERSION

    extra: dict[str, Any] = {"seed": cfg.seed}
    if "data" in DEPENDS[stage] and cfg.data.tokenizer is None and cfg.model.kind != "pretrained":
        extra["tiny_tokenizer"] = TINY_TOKENIZER_VERSION
    return config_fingerprint(cfg, DEPENDS[stage], **extra)


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


def run_stages(stages: Sequence[str], *, manifest: Manifest, fingerprint: Callable[[str], str],
               outputs: Callable[[str], list[Path]], call: Callable[[str], dict[str, Any]], tag: str,
               force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` (in the order given) idempotently, as both examples do.

    A stage whose ``fingerprint(stage)`` is recorded as done is skipped; an interrupted one with
    the same fingerprint resumes (its checkpoints and shards are kept); otherwise, or with
    ``force``, its ``outputs(stage)`` are deleted first, so stale outputs of other settings are
    never resumed. ``call(stage)`` runs it and returns the summary the manifest records.
    """
    for stage in stages:
        fp = fingerprint(stage)
        if not force and manifest.done(stage, fp):
            log(f"[{tag}] {stage}: done earlier, skipped (use --force to rerun)")
            continue
        resuming = manifest.resumable(stage, fp) and not force
        if not resuming:
            for path in outputs(stage):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        log(f"[{tag}] {stage}: {'resuming' if resuming else 'running'}")
        manifest.start(stage, fp)
        t0 = time.perf_counter()
        summary = call(stage)
        wall = time.perf_counter() - t0
        manifest.record(stage, fp, wall, summary)
        log(f"[{tag}] {stage}: finished in {wall:.1f}s")
    return manifest.data


def run_example(ws_root: Path, stages: Sequence[str], fns: Mapping[str, Callable[..., dict[str, Any]]], *,
                threads: int, fingerprint: Callable[[str], str], outputs: Callable[[str], list[Path]], tag: str,
                force: bool = False, started_at: float | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """What both examples' ``run`` do: set torch's threads, create the run directory, and
    :func:`run_stages` with ``fns[stage]()`` as each stage, the ``report`` stage getting
    ``command_s``, the wall time since ``started_at`` (a ``time.time()``: when the command began,
    set-up included). Returns the manifest."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    ws_root.mkdir(parents=True, exist_ok=True)

    def call(stage: str) -> dict[str, Any]:
        if stage == "report" and started_at is not None:
            return fns[stage](command_s=time.time() - started_at)
        return fns[stage]()

    return run_stages(stages, manifest=Manifest(ws_root / "manifest.json"), fingerprint=fingerprint,
                      outputs=outputs, call=call, tag=tag, force=force, log=log)


def run(cfg: EchoConfig, stages: Sequence[str] = STAGES, force: bool = False, started_at: float | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``stages`` in pipeline order; returns the manifest. ``started_at`` (a ``time.time()``)
    is when the command began, set-up included: the report stage records the wall time since."""
    ws = Workspace(cfg)
    fns = {name: functools.partial(fn, cfg, ws) for name, fn in stage_functions().items()}
    order = [s for s in STAGES if s in stages and (s != "curate" or cfg.curate_iu)]
    return run_example(ws.root, order, fns, threads=cfg.threads, fingerprint=lambda s: fingerprint(cfg, s),
                       outputs=lambda s: stage_outputs(cfg, ws, s), tag="echo", force=force,
                       started_at=started_at, log=log)
