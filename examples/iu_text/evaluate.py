"""The evaluation stage: every variant on the held-out test split, then interleaved speed rounds.

Variants (``examples.echo_cxr.evaluate``'s recipes): AR; RAD multi-step at L=4 and L=8 (tau);
RAD forced to one step at L=8; the DCD student at L=8, one step. Quality: ROUGE-L, BLEU-4,
CIDEr-D, SemScore, clinical F1 against the input codes (macro, micro, per observation) and the
repetition rate, decoded ``eval.batch_size`` studies at a time (batching is exact). Speed: the
first ``eval.speed_samples`` test studies at batch 1, variants interleaved study by study
(tokens/s with and without prefill, TPF, NFE), then the forward-cost limit ``L*t(1)/t(2L)``
of the student: t(n) is one cached forward over n new tokens at the test prompts' mean context,
the two timed in alternation.

``results.json``: ``rows`` (one per variant), ``per_observation``, ``labeler_ceiling``,
``speed`` (with ``fused_vs_ar`` and ``forward_cost_limit``), ``samples``, ``variants``.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from blockdistill.evaluation import (
    TextMetrics,
    evaluate_variants,
    forward_cost_limit,
    measure_speed,
    write_json,
)
from blockdistill.utils.machine import machine_info
from examples.iu_text.config import TextConfig
from examples.iu_text.data import Workspace
from examples.iu_text.scoring import MeshClinicalScorer

_NEEDS = {"ar": "ar", "base_L4": "rad_L4", "base_L8": "rad_L8", "echo_L8": "dcd_L8"}
ROW_KEYS = ("variant", "clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4", "cider_d", "semscore",
            "repetition_rate", "tokens_per_s", "tokens_per_s_decode", "tpf", "nfe", "n")


def load_models(ws: Workspace, variants: list[str]) -> tuple[dict[str, Any], Any]:
    from examples.echo_cxr.evaluate import _RECIPES, load_model

    keys = sorted({_RECIPES[v][0] for v in variants})
    tok = ws.tokenizer("rad_L8") if (ws.model_dir("rad_L8") / "tokenizer_config.json").is_file() else ws.tokenizer()
    missing = [str(ws.model_dir(_NEEDS[k])) for k in keys if not (ws.model_dir(_NEEDS[k]) / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"models {missing} do not exist; run the training stages first")
    return {k: load_model(ws.model_dir(_NEEDS[k]), tok) for k in keys}, tok


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {"variant": r["variant"], "clinical_macro_f1": r["clinical_macro_f1"],
            "clinical_micro_f1": r["clinical_micro_f1"], "rouge_l": r["rouge_l"], "bleu4": r["bleu_4"],
            "cider_d": r["cider_d"], "semscore": r.get("semscore"), "repetition_rate": r["repetition_rate"],
            "tokens_per_s": r["tokens_per_s"], "tokens_per_s_decode": r.get("tokens_per_s_decode"),
            "tpf": r["tpf"], "nfe": r["forwards_per_sample"], "n": r["n"]}


def stage_eval(cfg: TextConfig, ws: Workspace) -> dict[str, Any]:
    from examples.echo_cxr.evaluate import echo_variants

    e = cfg.eval
    t0 = time.perf_counter()
    models, tok = load_models(ws, e.variants)
    variants = echo_variants(models, include=e.variants, tau=e.tau, cache=e.cache, max_new_tokens=e.max_new_tokens)
    test = ws.samples("test")
    data = test[: e.n_test] if e.n_test else test
    report = evaluate_variants(variants, data, tok, metrics=TextMetrics(semscore=e.semscore, repetition_n=e.repetition_ngram),
                               scorers={"clinical": MeshClinicalScorer()},
                               batch_size=e.batch_size, warmup=1, progress=True)
    rows = [_row(r) for r in report.rows if r["group"] == "lang"]
    t_quality = time.perf_counter() - t0
    speed = measure_speed(variants, data, tok, e.speed_samples, e.speed_batch_size) if e.speed_samples else {}
    for row in rows:
        row.update({k: speed[row["variant"]][k] for k in ("tokens_per_s", "tokens_per_s_decode", "tpf", "nfe")
                    if row["variant"] in speed})
    speed_out: dict[str, Any] = {"batch_size": e.speed_batch_size, "samples": e.speed_samples, "by_variant": speed}
    if "ar" in speed and "echo_onestep_L8" in speed:
        speed_out["fused_vs_ar"] = speed["echo_onestep_L8"]["tokens_per_s_decode"] / speed["ar"]["tokens_per_s_decode"]
    if e.forward_cost_repeats and "echo_L8" in models:
        ctx = int(statistics.fmean(len(s["prompt_ids"]) for s in data)) + e.max_new_tokens // 2
        speed_out["forward_cost_limit"] = forward_cost_limit(models["echo_L8"], ctx, e.forward_cost_repeats)
    summary = json.loads((ws.data_dir / "summary.json").read_text())
    per_obs = {r["variant"]: {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("clinical_f1/")}
               for r in report.rows if r["group"] == "lang"}
    out = {"machine": machine_info(), "rows": rows, "per_observation": per_obs,
           "labeler_ceiling": summary["labeler_ceiling"], "speed": speed_out,
           "samples": report.side_by_side(e.n_samples_in_report),
           "variants": [res.summary() for res in report.results], "n_test": len(data),
           "eval_s": {"quality": t_quality, "total": time.perf_counter() - t0}}
    write_json(ws.root / "eval" / "predictions.json",
               {res.name: [p.as_dict() for p in res.predictions] for res in report.results})
    write_json(ws.root / "results.json", out)
    return {"rows": len(rows), "eval_s": out["eval_s"]["total"]}
