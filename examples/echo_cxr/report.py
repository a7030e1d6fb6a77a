"""The ECHO demo report: ``report.md`` with PNG plots, built from ``results.json``.

It shows quality against speed, every metric per variant and language, NFE/TPF/tokens/s,
per-finding F1, training curves per stage, sample reports next to the truth, the curation
counts of the real IU-Xray reports, the paper's targets checked on this run, and the machine.

    python -m examples.echo_cxr report --config examples/echo_cxr/configs/tiny
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_COLUMNS = ("clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4", "cider_d", "semscore",
                  "repetition_rate")
SPEED_COLUMNS = ("tokens_per_s", "tokens_per_s_decode", "tpf", "nfe", "n")
VARIANT_LABELS = {
    "ar": "ECHO_AR (AR)",
    "base_multistep_L4": "ECHO_Base multi-step L=4",
    "base_multistep_L8": "ECHO_Base multi-step L=8",
    "base_onestep_L8": "ECHO_Base forced one-step L=8",
    "echo_onestep_L8": "ECHO one-step L=8 (DCD)",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rows(results: Mapping[str, Any], lang: str) -> list[dict[str, Any]]:
    return [r for r in results["rows"] if r["lang"] == lang]


def plot_quality_vs_speed(results: Mapping[str, Any], path: Path, lang: str = "en") -> Path:
    """One point per variant: tokens/s (x) against clinical macro-F1 (y)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = "osD^v*Px"
    for i, r in enumerate(_rows(results, lang)):
        # a legend, not annotations: slow variants sit on top of each other
        ax.scatter(r["tokens_per_s"], r["clinical_macro_f1"], s=80, marker=markers[i % len(markers)],
                   label=f"{VARIANT_LABELS.get(r['variant'], r['variant'])}: TPF {r['tpf']:.2f}")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel("tokens / s (prefill included)")
    ax.set_ylabel("clinical macro-F1")
    ax.set_title(f"Quality against speed ({lang} held-out set)")
    ax.grid(alpha=0.3)
    ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_metrics(results: Mapping[str, Any], path: Path, lang: str = "en") -> Path:
    """Grouped bars of every quality metric per variant (CIDEr-D divided by 10 to share the axis)."""
    import numpy as np

    plt = _plt()
    rows = _rows(results, lang)
    cols = [c for c in METRIC_COLUMNS if all(r.get(c) is not None for r in rows)]
    x = np.arange(len(cols))
    w = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, r in enumerate(rows):
        vals = [r[c] / (10 if c == "cider_d" else 1) for c in cols]
        ax.bar(x + i * w, vals, w, label=VARIANT_LABELS.get(r["variant"], r["variant"]))
    ax.set_xticks(x + w * (len(rows) - 1) / 2, [c.replace("cider_d", "cider_d/10") for c in cols], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Report quality per variant ({lang})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_finding(per_finding: Mapping[str, Mapping[str, float]], path: Path) -> Path:
    """Heat map: variants x findings, positive-mention F1."""
    import numpy as np

    plt = _plt()
    variants = list(per_finding)
    findings = list(next(iter(per_finding.values())))
    grid = np.array([[per_finding[v][f] for f in findings] for v in variants])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(findings), 0.6 + 0.5 * len(variants)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(findings)), [f.replace("_", " ") for f in findings], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(variants)), [VARIANT_LABELS.get(v, v) for v in variants], fontsize=8)
    for i in range(len(variants)):
        for j in range(len(findings)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.03)
    ax.set_title("Per-finding F1 (positive mentions, en)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_loss_curve(metrics_csv: Path) -> list[tuple[int, float]]:
    """``(step, train/loss)`` pairs from a Lightning CSVLogger file."""
    out = []
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                out.append((int(row["step"]), float(row["train/loss"])))
    return out


def plot_training(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Training loss per stage, one panel each."""
    plt = _plt()
    names = [n for n in curves if curves[n]]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.0), squeeze=False)
    for ax, n in zip(axes[0], names):
        steps, losses = zip(*curves[n])
        ax.plot(steps, losses)
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("train loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " / ".join(p.strip() for p in str(text).splitlines() if p.strip()) or "(empty)"


TARGETS = {
    "vs_ar": 0.95,         # ECHO one-step L=8 over ECHO_AR, clinical macro-F1 and ROUGE-L, every language
    "vs_teacher": 0.98,    # ECHO over its L=8 multi-step teacher, same metrics
    "repetition": 0.01,    # ECHO's repetition rate at most ECHO_AR's plus 1 point, every language
    "speed_fraction": 0.9,  # ECHO decode tokens/s over AR's, as a fraction of this machine's L*t(1)/t(2L)
    "demo_s": 900.0,       # the whole `make demo`, set-up included (the goal is 600)
}
"""The targets of the ECHO-quality issue, checked on every run by :func:`check_targets`."""


def check_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every target of :data:`TARGETS`, measured on this run: per language for quality and
    repetition, once for speed and time. A target that this run cannot measure (a variant or a
    measurement missing) is listed with ``met`` None, never left out."""
    out = []

    def add(name: str, value: float | None, target: str, ok: bool | None) -> None:
        out.append({"target": name, "measured": value, "wanted": target, "met": ok})

    for lang in sorted({r["lang"] for r in results["rows"]}):
        by = {r["variant"]: r for r in _rows(results, lang)}
        ar, base, forced, echo = (by.get(k) for k in ("ar", "base_multistep_L8", "base_onestep_L8", "echo_onestep_L8"))
        for m in ("clinical_macro_f1", "rouge_l"):
            for ref, key, label in ((ar, "vs_ar", "ECHO_AR"), (base, "vs_teacher", "its L=8 teacher")):
                ratio = echo[m] / max(ref[m], 1e-9) if echo and ref else None
                add(f"{lang}: ECHO / {label} ({m})", ratio, f">= {TARGETS[key]:.2f}",
                    None if ratio is None else ratio >= TARGETS[key])
        if forced and echo and base:
            add(f"{lang}: ECHO - Base forced one-step (macro-F1)", echo["clinical_macro_f1"] - forced["clinical_macro_f1"],
                "> 0 (the mean-field gap)", forced["clinical_macro_f1"] < echo["clinical_macro_f1"])
        rep = (echo["repetition_rate"] - ar["repetition_rate"]
               if echo and ar and echo.get("repetition_rate") is not None and ar.get("repetition_rate") is not None else None)
        add(f"{lang}: ECHO repetition rate - ECHO_AR's", rep, f"<= {TARGETS['repetition']:.2f}",
            None if rep is None else rep <= TARGETS["repetition"])
    echo = {r["variant"]: r for r in _rows(results, "en")}.get("echo_onestep_L8")
    if echo:
        tpf = results.get("echo_full_block_tpf", echo["tpf"])
        add("ECHO TPF on full blocks (L=8)", tpf, "= 8.0", abs(tpf - 8.0) < 1e-6)
    sp = results.get("speed") or {}
    by_v = sp.get("by_variant") or {}
    limit = (sp.get("forward_cost_limit") or {}).get("limit")
    frac = None
    if limit and "ar" in by_v and "echo_onestep_L8" in by_v:
        ratio = by_v["echo_onestep_L8"]["tokens_per_s_decode"] / max(by_v["ar"]["tokens_per_s_decode"], 1e-9)
        frac = ratio / limit
        add("ECHO decode tokens/s / ECHO_AR's (batch 1)", ratio, f"limit L*t(1)/t(2L) = {limit:.2f}", None)
    add("that ratio / the limit", frac, f">= {TARGETS['speed_fraction']:.1f}",
        None if frac is None else frac >= TARGETS["speed_fraction"])
    took = results.get("command_s")
    add("`make demo` wall time, set-up included (s)", took, f"<= {TARGETS['demo_s']:.0f}",
        None if took is None else took <= TARGETS["demo_s"])
    return out


def write_report(results_path: Path, out_dir: Path, curves: Mapping[str, Sequence[tuple[int, float]]] | None = None,
                 curation: Mapping[str, Any] | None = None, manifest: Mapping[str, Any] | None = None,
                 settings: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Render ``report.md`` and its plots next to ``results.json``."""
    results = json.loads(Path(results_path).read_text())
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    parts = ["# ECHO demo report", "",
             f"Run wall time: {results.get('wall_s', 0):.0f} s in the stages"
             + (f", {results['command_s']:.0f} s for the whole command, set-up included" if results.get("command_s") else "")
             + ". All numbers below were measured in this run.", ""]
    sp = results.get("speed") or {}
    speed_note = (f"Speed columns (tokens/s, TPF, NFE = decode forwards per report) were measured at batch "
                  f"{sp['batch_size']} on {sp['samples']} held-out studies per variant, variants interleaved; quality "
                  f"columns on the whole held-out set." if sp.get("by_variant") else
                  "Speed columns come from the batched quality run.")
    lim = sp.get("forward_cost_limit")
    if lim:
        speed_note += (f" This machine's limit on ECHO's decode speed-up over AR at batch 1 is L*t(1)/t(2L) = "
                       f"{lim['limit']:.2f} (one cached forward of 1 token {lim['t1_s'] * 1e3:.1f} ms, of 2L = "
                       f"{2 * lim['block_size']} tokens {lim['t2L_s'] * 1e3:.1f} ms, at a context of {lim['context']}).")
    parts += ["## Quality against speed", "", speed_note, "", f"![quality vs speed]({plot_quality_vs_speed(results, plots / 'quality_vs_speed.png').relative_to(out_dir)})", ""]
    parts += ["## Targets", "", _table(check_targets(results), ["target", "measured", "wanted", "met"]), ""]
    parts += ["## All metrics", ""]
    langs = sorted({r["lang"] for r in results["rows"]})
    for lang in langs:
        parts += [f"### {lang}", "", _table(_rows(results, lang), ["variant", *METRIC_COLUMNS, *SPEED_COLUMNS]), ""]
    parts += [f"![metrics]({plot_metrics(results, plots / 'metrics.png').relative_to(out_dir)})", ""]
    if results.get("per_finding"):
        parts += ["## Per-finding F1", "",
                  f"![per finding]({plot_per_finding(results['per_finding'], plots / 'per_finding.png').relative_to(out_dir)})", ""]
    if curves and any(curves.values()):
        parts += ["## Training curves", "", f"![training]({plot_training(curves, plots / 'training.png').relative_to(out_dir)})", ""]
    if settings:
        parts += ["## How each model was trained", "", _table(list(settings), ["model", "stage", "steps", "batch", "lr",
                                                                             "details"]), ""]
    if manifest:
        rows = [{"stage": k, "wall_s": v.get("wall_s")} for k, v in manifest.items()]
        parts += ["## Stage times", "", _table(rows, ["stage", "wall_s"]), ""]
    if results.get("samples"):
        parts += ["## Sample reports", ""]
        for s in results["samples"]:
            parts += [f"**Study {s['index']}** ({s['lang']})", "", f"- **truth:** {_one_line(s['reference'])}"]
            parts += [f"- **{VARIANT_LABELS.get(k, k)}:** {_one_line(v)}" for k, v in s["predictions"].items()]
            parts += [""]
    if curation:
        parts += ["## Curation of the real IU-Xray reports (offline stages 1-3 and 5)", "",
                  _table(curation.get("stages", []), ["stage", "in", "out", "rejected"]), ""]
    m = results.get("machine", {})
    parts += ["## Machine", "", "```", json.dumps(m, indent=2), "```", ""]
    out = out_dir / "report.md"
    from blockdistill.evaluation.report import atomic_write_text

    atomic_write_text(out, "\n".join(parts))
    return out
