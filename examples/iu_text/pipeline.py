"""Run the text example's stages in order, skipping finished ones (a per-stage manifest).

The manifest (``<run_dir>/manifest.json``, the ECHO example's :class:`Manifest`) records, per
finished stage, a fingerprint of the config sections its output depends on. A rerun skips a
stage whose fingerprint matches, reruns one whose config changed (clearing its outputs first),
and resumes an interrupted one from its checkpoints or shards; ``force=True`` reruns everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples.echo_cxr.pipeline import Manifest, chained_depends, config_fingerprint, run_stages
from examples.iu_text.config import STAGES, TextConfig
from examples.iu_text.data import Workspace

DEPENDS: dict[str, tuple[str, ...]] = chained_depends(("data", "model.kind", "model.path"))
"""Config sections each stage's output depends on (its fingerprint)."""


def stage_outputs(cfg: TextConfig, ws: Workspace, stage: str) -> list[Path]:
    """What a stage writes; cleared before it reruns from scratch."""
    return [ws.curate_dir, ws.data_dir, ws.tokenizer_dir] if stage == "data" else ws.stage_outputs(stage)


def fingerprint(cfg: TextConfig, stage: str) -> str:
    """Hash of the config sections ``stage`` depends on, the seed and the tiny tokenizer's recipe."""
    from examples.iu_text.prompts import INSTRUCTION, SYSTEM, TINY_TOKENIZER_VERSION

    extra: dict[str, Any] = {"seed": cfg.seed, "prompt": [SYSTEM, INSTRUCTION]}
    if cfg.model.kind == "tiny":
        extra["tiny_tokenizer"] = TINY_TOKENIZER_VERSION
    return config_fingerprint(cfg, DEPENDS[stage], **extra)


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
    fns = stage_functions()

    def call(stage: str) -> dict[str, Any]:
        if stage == "report":
            return fns[stage](cfg, ws, {} if started_at is None else {"command_s": time.time() - started_at})
        return fns[stage](cfg, ws)

    return run_stages([s for s in STAGES if s in stages], manifest=Manifest(ws.root / "manifest.json"),
                      fingerprint=lambda s: fingerprint(cfg, s), outputs=lambda s: stage_outputs(cfg, ws, s),
                      call=call, tag="iu_text", force=force, log=log)
