"""The report stage: the issue's targets checked on ``results.json``, then ``report.md`` with plots.

The targets are constants here (:data:`TARGETS`), checked, never lowered: a missed target is
recorded as missed, with the measured values.

    python -m examples.iu_text report --config examples/iu_text/configs/cpu
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blockdistill.evaluation import atomic_write_text, markdown_table, write_json
from examples.echo_cxr.report import plot_training, read_loss_curve
from examples.iu_text.config import TextConfig
from examples.iu_text.data import Workspace

LABELS = {"ar": "AR (SFT)", "base_multistep_L4": "RAD multi-step L=4", "base_multistep_L8": "RAD multi-step L=8",
          "base_onestep_L8": "RAD forced one-step L=8", "echo_onestep_L8": "DCD student one-step L=8"}
TARGETS = {
    "student_f1_vs_ar": 0.95,  # DCD student's clinical macro-F1 / AR's, at least.
    "student_rouge_vs_ar": 0.95,  # DCD student's ROUGE-L / AR's, at least.
    "onestep_gap": 0.05,  # RAD forced one-step clinical macro-F1 below the student's by at least this much ("clearly below").
    "repetition_margin": 0.01,  # Student's repetition rate at most AR's plus this (1 point).
    "fused_vs_ar": 3.0,  # Student's fused one-step decode tokens/s at batch 1 over AR's, at least.
}


def check_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per target: ``name``, ``target``, ``measured``, ``met`` (None when a row is missing)."""
    rows = {r["variant"]: r for r in results["rows"]}
    ar, st, one = rows.get("ar"), rows.get("echo_onestep_L8"), rows.get("base_onestep_L8")

    def ratio(a, b, key):
        return None if a is None or b is None or not b[key] else a[key] / b[key]

    out = []

    def add(name, target, measured, met, note):
        out.append({"name": name, "target": target, "measured": measured, "met": None if measured is None else met,
                    "note": note})

    f1 = ratio(st, ar, "clinical_macro_f1")
    add("student_f1_vs_ar", TARGETS["student_f1_vs_ar"], f1, f1 is not None and f1 >= TARGETS["student_f1_vs_ar"],
        "DCD L=8 clinical macro-F1 / AR")
    rl = ratio(st, ar, "rouge_l")
    add("student_rouge_vs_ar", TARGETS["student_rouge_vs_ar"], rl, rl is not None and rl >= TARGETS["student_rouge_vs_ar"],
        "DCD L=8 ROUGE-L / AR")
    gap = None if st is None or one is None else st["clinical_macro_f1"] - one["clinical_macro_f1"]
    add("onestep_gap", TARGETS["onestep_gap"], gap, gap is not None and gap >= TARGETS["onestep_gap"],
        "student macro-F1 minus RAD forced one-step macro-F1 (the mean-field gap)")
    rep = None if st is None or ar is None else st["repetition_rate"] - ar["repetition_rate"]
    add("repetition_margin", TARGETS["repetition_margin"], rep, rep is not None and rep <= TARGETS["repetition_margin"],
        "student repetition rate minus AR's")
    sp = results.get("speed") or {}
    fv = sp.get("fused_vs_ar")
    lim = (sp.get("forward_cost_limit") or {}).get("limit")
    add("fused_vs_ar", TARGETS["fused_vs_ar"], fv, fv is not None and fv >= TARGETS["fused_vs_ar"],
        "fused one-step L=8 decode tokens/s over AR's, batch 1" + (f"; limit L*t(1)/t(2L) = {lim:.2f}" if lim else ""))
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_vs_speed(rows, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, r in enumerate(rows):
        ax.scatter(r["tokens_per_s_decode"] or r["tokens_per_s"], r["clinical_macro_f1"], s=80, marker="osD^v*"[i % 6],
                   label=f"{LABELS.get(r['variant'], r['variant'])}: TPF {r['tpf']:.2f}")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel("decode tokens / s (batch 1)")
    ax.set_ylabel("clinical macro-F1 vs input codes")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_observation(per_obs: Mapping[str, Mapping[str, float]], ceiling: Mapping[str, Any], path: Path) -> Path:
    import numpy as np

    plt = _plt()
    names = sorted({o for v in per_obs.values() for o in v} | set(ceiling.get("per_observation", {})))
    series = {LABELS.get(k, k): [v.get(o, 0.0) for o in names] for k, v in per_obs.items()}
    series["labeler ceiling (radiologists' text)"] = [ceiling["per_observation"].get(o, {}).get("f1", 0.0) for o in names]
    x = np.arange(len(names))
    w = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(x + i * w, vals, w, label=label)
    ax.set_xticks(x + w * (len(series) - 1) / 2, names, rotation=40, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _one_line(text: str) -> str:
    return " / ".join(p.strip() for p in text.splitlines() if p.strip()) or "(empty)"


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def stage_report(cfg: TextConfig, ws: Workspace, command_s: float | None = None) -> dict[str, Any]:
    """Targets and wall time (``command_s``: the whole command's so far, set-up included) into
    ``results.json``; ``report.md`` and ``plots/``."""
    path = ws.root / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the 'eval' stage first")
    results = json.loads(path.read_text())
    manifest = json.loads((ws.root / "manifest.json").read_text()) if (ws.root / "manifest.json").is_file() else {}
    stage_wall = {k: v.get("wall_s") for k, v in manifest.items() if v.get("wall_s") is not None}
    results["wall"] = {"stages_s": stage_wall, "stages_total_s": sum(stage_wall.values()),
                       **({} if command_s is None else {"command_s": command_s})}
    results["targets"] = check_targets(results)
    write_json(path, results)

    plots = ws.root / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    curves = {}
    for name in ["ar", *(f"rad_L{s}" for s in cfg.rad.block_sizes), f"dcd_L{cfg.collect.block_size}"]:
        f = ws.train_dir(name) / "logs" / "version_0" / "metrics.csv"
        if f.is_file():
            curves[name] = read_loss_curve(f)
    ceiling = results["labeler_ceiling"]
    plot_quality_vs_speed(results["rows"], plots / "quality_vs_speed.png")
    plot_per_observation(results["per_observation"], ceiling["test"], plots / "per_observation.png")
    if any(curves.values()):
        plot_training(curves, plots / "training.png")
    rows = [{**r, "variant": LABELS.get(r["variant"], r["variant"])} for r in results["rows"]]
    w = results["wall"]
    parts = ["# SmolLM2 drafts IU-Xray reports from their MeSH codes: AR -> RAD -> DCD", "",
             f"Model: `{cfg.model.kind}`{' ' + cfg.model.path if cfg.model.path else ''}; {results['n_test']} held-out "
             f"test studies. Wall time: stages {w['stages_total_s']:.0f} s"
             + (f", this command {w['command_s']:.0f} s (set-up included)" if "command_s" in w else "") + ".", "",
             "## Targets (issue 17; never lowered in code)", "",
             markdown_table([{**t, "target": _fmt(t["target"]), "measured": _fmt(t["measured"]),
                              "met": {True: "met", False: "missed", None: "not measured"}[t["met"]]}
                             for t in results["targets"]], ("name", "target", "measured", "met", "note")), "",
             "## Quality and speed", "", markdown_table(rows, ROW_KEYS_REPORT), "",
             "![quality against speed](plots/quality_vs_speed.png)", ""]
    sp = results.get("speed") or {}
    if sp.get("forward_cost_limit"):
        lim = sp["forward_cost_limit"]
        parts += [f"Forward-cost limit L*t(1)/t(2L) = {lim['limit']:.2f} (t(1) {lim['t1_s'] * 1e3:.1f} ms, t(2L) "
                  f"{lim['t2L_s'] * 1e3:.1f} ms at context {lim['context']}), beside the measured fused/AR "
                  f"ratio {_fmt(sp.get('fused_vs_ar'))}.", ""]
    parts += ["## Clinical F1 per observation", "",
              f"The labeler's ceiling (its F1 on the radiologists' own test reports against their codes): macro "
              f"{ceiling['test']['macro']['f1']:.3f} on the test split, {ceiling['raw']['macro']['f1']:.3f} on all "
              f"{ceiling['raw']['n']} raw reports.", "", "![per-observation F1](plots/per_observation.png)", ""]
    if curves:
        parts += ["## Training curves", "", "![training](plots/training.png)", ""]
    parts += ["## Sample drafts", ""]
    for s in results.get("samples", []):
        parts += [f"**Radiologist:** {_one_line(s['reference'])}", ""]
        parts += [f"- **{LABELS.get(k, k)}:** {_one_line(v)}" for k, v in s["predictions"].items()]
        parts.append("")
    parts += ["## Machine", "", "```", json.dumps(results.get("machine", {}), indent=1), "```", ""]
    atomic_write_text(ws.root / "report.md", "\n".join(parts))
    return {"report": str(ws.root / "report.md"), "targets_met": sum(bool(t["met"]) for t in results["targets"])}


ROW_KEYS_REPORT = ("variant", "clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4", "cider_d", "semscore",
                   "repetition_rate", "tokens_per_s_decode", "tpf", "nfe", "n")
