"""The ECHO evaluation and report stages.

``eval`` decodes the held-out studies with every variant (AR, Base multi-step at L=4 and 8,
Base forced one-step, ECHO one-step), scores them, and writes ``results.json`` in the demo's
schema with the machine, per-finding F1 and sample reports. ``report`` turns it into
``report.md`` with plots.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import torch

from blockdistill.evaluation import forward_cost_limit, measure_speed, write_json
from blockdistill.utils.machine import machine_info
from examples.echo_cxr.config import EchoConfig
from examples.echo_cxr.evaluate import (
    ClinicalScorer,
    echo_variants,
    load_model,
    run_echo_eval,
    write_echo_predictions,
)
from examples.echo_cxr.labeler import SYNTHETIC_FINDINGS
from examples.echo_cxr.workspace import Workspace

_NEEDS = {"ar": "ar", "base_L4": "rad_L4", "base_L8": "rad_L8", "echo_L8": "dcd_L8"}


def _models(ws: Workspace, variants: list[str], device: str):
    from examples.echo_cxr.evaluate import _RECIPES

    keys = {_RECIPES[v][0] for v in variants}
    tok = ws.tokenizer("rad_L8") if (ws.model_dir("rad_L8") / "tokenizer_config.json").is_file() else ws.tokenizer()
    return {k: load_model(ws.model_dir(_NEEDS[k]), tok, device=device) for k in sorted(keys)}, tok


def full_block_tpf(model, samples, n: int = 4, blocks: int = 4) -> float:
    """Tokens per forward of one-step fused decoding on full blocks.

    Two forced-length runs that differ by ``blocks`` whole blocks; the extra tokens over the
    extra forwards is the TPF of full blocks (the first block may hold the prompt's tail).
    """
    from blockdistill.data import BlockCollator
    from blockdistill.evaluation import SamplerConfig

    batch = [samples[i] for i in range(min(n, len(samples)))]
    lens = torch.tensor([len(s["prompt_ids"]) for s in batch])
    ids = torch.zeros(len(batch), int(lens.max()), dtype=torch.long)
    for b, s in enumerate(batch):
        ids[b, : lens[b]] = s["prompt_ids"]
    vision = BlockCollator(1, 0)([{**s, "response_ids": [0]} for s in batch]).vision
    size = model.block_size
    stats = [SamplerConfig("block", "one_step", {}, "fused", k * size, False).generate(model, ids, lens, vision).stats
             for k in (blocks, 2 * blocks)]
    return (stats[1].generated_tokens - stats[0].generated_tokens) / (stats[1].row_forwards - stats[0].row_forwards)


def stage_eval(cfg: EchoConfig, ws: Workspace) -> dict[str, Any]:
    e = cfg.eval
    t0 = time.perf_counter()
    models, tok = _models(ws, e.variants, e.device)
    variants = echo_variants(models, include=e.variants, tau=e.tau, cache=e.cache, max_new_tokens=e.max_new_tokens)
    data = ws.samples("eval")
    clinical = ClinicalScorer(findings=SYNTHETIC_FINDINGS, observed_only=False) \
        if cfg.data.source == "synthetic" else ClinicalScorer()
    results = run_echo_eval(variants, data, tok, out_dir=ws.root / "eval", semscore=e.semscore, clinical=clinical,
                            batch_size=e.batch_size, samples=e.n_samples_in_report, warmup=1,
                            repetition_n=e.repetition_n)
    write_echo_predictions(results, ws.records("eval"), ws.root / "eval")  # every report as an ECHO record
    speed = measure_speed(variants, data, tok, e.speed_samples, e.speed_batch_size) if e.speed_samples else {}
    for row in results["rows"]:
        if row["variant"] in speed:
            row.update({k: speed[row["variant"]][k] for k in ("tokens_per_s", "tokens_per_s_decode", "tpf", "nfe")})
    manifest = json.loads((ws.root / "manifest.json").read_text()) if (ws.root / "manifest.json").is_file() else {}
    wall = sum(v.get("wall_s", 0.0) for k, v in manifest.items() if k != "eval") + time.perf_counter() - t0
    out = {"machine": machine_info(), "wall_s": wall, "rows": results["rows"],
           "speed": {"batch_size": e.speed_batch_size, "samples": e.speed_samples, "by_variant": speed},
           "per_finding": {v: langs.get("en", {}) for v, langs in results["per_finding"].items()},
           "samples": results["samples"], "variants": results["variants"], "by_source": results["by_source"]}
    if "echo_L8" in models:
        out["echo_full_block_tpf"] = full_block_tpf(models["echo_L8"], data)
        if e.forward_cost_repeats:
            # The context a decode forward sees on average: the prompt (image tokens included)
            # and half the report budget.
            ctx = int(statistics.fmean(len(s["prompt_ids"]) for s in data)) + e.max_new_tokens // 2
            out["speed"]["forward_cost_limit"] = forward_cost_limit(models["echo_L8"], ctx, e.forward_cost_repeats)
    write_json(ws.root / "results.json", out)
    return {"rows": len(out["rows"]), "eval_s": time.perf_counter() - t0}


def training_settings(cfg: EchoConfig) -> list[dict[str, Any]]:
    """One row per trained model: what produced it (for the report)."""
    rows = [{"model": "ECHO_AR", "stage": "1: AR continued pre-training", "steps": cfg.ar.trainer.max_steps,
             "batch": cfg.ar.batch_size, "lr": f"{cfg.ar.optim.lr:g}", "details": "next-token CE on the response"}]
    for size in cfg.rad.block_sizes:
        rows.append({"model": f"ECHO_Base L={size}", "stage": "2: RAD", "steps": cfg.rad.steps_for(size),
                     "batch": cfg.rad.batch_size, "lr": f"{cfg.rad.optim.lr:g}",
                     "details": f"from ECHO_AR; shift={cfg.rad.shift}, layout={cfg.rad.layout}, vision frozen"})
    d, c = cfg.dcd.distill, cfg.collect
    rows.append({"model": f"ECHO L={c.block_size}", "stage": "3: DCD", "steps": cfg.dcd.trainer.max_steps,
                 "batch": cfg.dcd.batch_size, "lr": f"{cfg.dcd.optim.lr:g}",
                 "details": f"from ECHO_Base L={c.block_size} on {c.n_prompts} teacher trajectories (tau "
                            f"{c.decode.tau}); target={d.target}, schedule={d.schedule}, divergence={d.divergence}, "
                            f"lambda_eos={d.lambda_eos}"
                            + (f"; on-policy (student decodes, teacher relabels) on {d.on_policy_fraction:g} of the "
                               f"steps from step {d.on_policy_start}" if d.on_policy_fraction > 0 else "")})
    return rows


def stage_report(cfg: EchoConfig, ws: Workspace, command_s: float | None = None) -> dict[str, Any]:
    """``report.md`` from ``results.json``; ``command_s`` (the whole command's wall time so far, set-up
    included) is recorded into ``results.json`` first."""
    from examples.echo_cxr.report import read_loss_curve, write_report

    if command_s is not None:
        results = json.loads((ws.root / "results.json").read_text())
        write_json(ws.root / "results.json", {**results, "command_s": command_s})

    curves = {}
    for name in ["ar", *(f"rad_L{s}" for s in cfg.rad.block_sizes), f"dcd_L{cfg.collect.block_size}"]:
        f = ws.train_dir(name) / "logs" / "version_0" / "metrics.csv"
        if f.is_file():
            curves[name] = read_loss_curve(f)
    cur = ws.root / "curate-iu" / "summary.json"
    curation = json.loads(cur.read_text()) if cur.is_file() else None
    manifest = json.loads((ws.root / "manifest.json").read_text()) if (ws.root / "manifest.json").is_file() else None
    path = write_report(ws.root / "results.json", ws.root, curves, curation, manifest, settings=training_settings(cfg))
    print(f"report: {path}")
    return {"report": str(path)}
