"""Run the text example's stages in order, skipping finished ones (a per-stage manifest).

The manifest (``<run_dir>/manifest.json``, the ECHO example's :class:`Manifest`) records, per
finished stage, a fingerprint of the config sections its output depends on. A rerun skips a
stage whose fingerprint matches, reruns one whose config changed (clearing its outputs first),
and resumes an interrupted one from its checkpoints or shards; ``force=True`` reruns everything.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from examples.echo_cxr.pipeline import chained_depends, config_fingerprint, run_example
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
    ws = Workspace(cfg)
    fns = {name: functools.partial(fn, cfg, ws) for name, fn in stage_functions().items()}
    return run_example(ws.root, [s for s in STAGES if s in stages], fns, threads=cfg.threads,
                       fingerprint=lambda s: fingerprint(cfg, s), outputs=lambda s: stage_outputs(cfg, ws, s),
                       tag="iu_text", force=force, started_at=started_at, log=log)
