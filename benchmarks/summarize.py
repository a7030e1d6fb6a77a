"""Turn benchmark results (``benchmarks/results/*.json``, written by ``run_all.py``) into markdown
and a plot: the per-run summary next to each result, and the benchmarks page of the docs.

    python benchmarks/summarize.py [--results benchmarks/results] [--out docs/_generated/benchmarks.md]
    python benchmarks/summarize.py --run benchmarks/results/<date>-<machine>.json   # one run, to stdout
    python benchmarks/summarize.py --readme README.md   # the README's numbers, from the latest full run

A combined result is ``{"created", "quick", "machine", "scripts": {name: <that script's JSON>},
"failures": {name: {"returncode", "tail"}}}``; each script's JSON is ``{"machine", "rows", ...}``.
Nothing here invents a number: a table shows what a file holds, and a run that is missing says so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NO_GPU = ("**No GPU numbers yet: no GPU machine was available.** Every number on this page was "
          "measured on a CPU; GPU rows (bfloat16, FSDP-scale shapes, xformers) appear here once "
          "`make bench` runs on a GPU machine.")

# Columns shown per script (any other script: every scalar column of its rows).
COLUMNS: dict[str, list[str]] = {
    "decode": ["model", "L", "batch", "method", "tokens_per_s", "tokens_per_s_decode", "tpf", "nfe",
               "vs_ar", "fused_vs_unfused"],
    "decode.limits": ["model", "L", "fused_vs_ar", "fused_vs_ar_limit", "fraction_of_ar_limit",
                      "fused_vs_unfused", "fused_vs_unfused_limit", "fraction_of_unfused_limit",
                      "fused_vs_unfused_limit_exact", "fraction_of_unfused_limit_exact"],
    "train_rad_vs_dup": ["layout", "P", "R", "L", "tokens", "wall_s", "peak_mem_bytes", "attention_pairs"],
    "attention_backends": ["slots", "backend", "mode", "density", "attn_s", "vs_sdpa", "mask_build_s", "compile_s",
                           "mask_bytes", "peak_mem_bytes", "max_abs_diff_vs_sdpa", "agrees"],
}
COLUMNS["lora"] = ["mode", "P", "R", "L", "rank", "trainable_params", "trainable_fraction", "wall_s", "peak_mem_bytes"]
COLUMNS["lora_quality"] = ["run", "lr", "rank", "steps", "trainable_params", "held_out_rad_loss_start",
                           "held_out_rad_loss_end", "exact_match", "train_s"]
COLUMNS["decode_shift"] = COLUMNS["decode_smollm2"] = COLUMNS["decode"]
TITLES = {
    "decode": "Decoding speed: AR, multi-step, one-step unfused and fused (`benchmarks/decode.py`)",
    "decode_shift": "Decoding speed with shift=True, as AR-converted models (ECHO) decode "
                    "(`benchmarks/decode.py --shift`)",
    "decode_smollm2": "Decoding speed of the real SmolLM2-135M-Instruct, L=8, batch 1, shift "
                      "(`benchmarks/decode.py --model smollm2 --shift --blocks 8 --batches 1`)",
    "train_rad_vs_dup": "RAD against full duplication, one training step (`benchmarks/train_rad_vs_dup.py`)",
    "attention_backends": "Attention backends on the RAD mask (`benchmarks/attention_backends.py`)",
    "lora": "LoRA against full fine-tuning, one RAD step with AdamW (`benchmarks/lora.py`)",
    "lora_quality": "LoRA against full fine-tuning at equal steps, RAD on SmolLM2-135M (`benchmarks/lora_quality.py`)",
}


# ---------------------------------------------------------------------- loading
def load_results(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every combined result in ``results``, oldest first (by ``created``, then file name)."""
    out = []
    for path in sorted(Path(results).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"summarize: skipping unreadable {path}: {e}", file=sys.stderr)
            continue
        if isinstance(data, dict) and "scripts" in data:
            data["_file"] = path.name
            out.append(data)
    return sorted(out, key=lambda d: (str(d.get("created", "")), d["_file"]))


def has_gpu(result: dict[str, Any]) -> bool:
    m = result.get("machine", {})
    return bool(m.get("cuda") or m.get("gpu"))


# ---------------------------------------------------------------------- formatting
def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 1e4 else str(v)
    return str(v).replace("|", "\\|")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts); columns default to every scalar key, in order."""
    if not rows:
        return "_(no rows)_\n"
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k, v in r.items() if k not in columns and not isinstance(v, (dict, list))]
    columns = [c for c in columns if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) if c in r else "" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def machine_line(machine: dict[str, Any]) -> str:
    hw = f"GPU {machine['gpu']} x{machine.get('gpu_count', 1)}" if machine.get("gpu") else "no GPU"
    parts = [f"CPU {machine.get('cpu', '?')} ({machine.get('cpu_count', '?')} cores, "
             f"{machine.get('torch_threads', '?')} torch threads)", hw,
             f"torch {machine.get('torch', '?')}"]
    if machine.get("transformers"):
        parts.append(f"transformers {machine['transformers']}")
    parts.append(f"Python {machine.get('python', '?')}")
    return ", ".join(parts)


def _script_section(name: str, data: dict[str, Any], level: str) -> str:
    out = [f"{level} {TITLES.get(name, f'`{name}`')}\n"]
    cfg = data.get("config")
    if isinstance(cfg, dict):
        shown = {k: v for k, v in cfg.items() if not isinstance(v, (dict, list)) or k in ("lengths", "blocks")}
        out.append("Settings: " + ", ".join(f"`{k}={v}`" for k, v in shown.items()) + "\n")
    out.append(table(data.get("rows", []), COLUMNS.get(name)))
    if name in ("decode", "decode_shift", "decode_smollm2") and data.get("limits"):
        out.append("\nBatch 1, decode-throughput ratios against the limits set by one forward's cost "
                   "(`fused_vs_unfused_limit` = 2 t(L) / t(2L), the conventional bound, assumes both unfused "
                   "passes cost a forward with the LM head on L rows; `_exact` uses the measured cost of the "
                   "unfused write pass, which runs the head on no row, or on one with shift):\n")
        out.append(table(data["limits"], COLUMNS["decode.limits"]))
    if isinstance(data.get("summary"), dict):
        s = {k: v for k, v in data["summary"].items() if not isinstance(v, (dict, list))}
        out.append("\n" + ", ".join(f"{k} = {_fmt(v)}" for k, v in s.items()) + "\n")
    for note in data.get("notes", []):
        out.append(f"\n- note: {note}")
    return "\n".join(out).rstrip() + "\n"


def render_run(result: dict[str, Any], level: str = "##") -> str:
    """Markdown for one combined result: machine, then a section per script, then failures."""
    out = [f"Run `{result.get('_file', '?')}`, created {result.get('created', '?')}"
           f"{' (`--quick`: smoke sizes, not representative)' if result.get('quick') else ''}.\n",
           f"Machine: {machine_line(result.get('machine', {}))}.\n"]
    load = result.get("load_avg_1min") or {}
    if load.get("start") is not None:
        cores = result.get("machine", {}).get("cpu_count") or 1
        seen = [v for v in (load["start"], load.get("end")) if v is not None]
        busy = " (other processes were running: timings are skewed)" if max(seen) > 0.5 * cores else ""
        end = f", after it: {load['end']:.2f}" if load.get("end") is not None else ""
        out.append(f"1-minute load average before the run: {load['start']:.2f}{end} on {cores} cores{busy}.\n")
    for note in result.get("notes", []):
        out.append(f"Note on this run: {note}\n")
    for name, data in result.get("scripts", {}).items():
        out.append(_script_section(name, data, level))
    for name, fail in result.get("failures", {}).items():
        tail = "\n".join(str(fail.get("tail", "")).splitlines()[-15:])
        out.append(f"{level} `{name}` failed (exit code {fail.get('returncode')})\n\n```text\n{tail}\n```\n")
    return "\n".join(out)


def render_docs(results: list[dict[str, Any]]) -> str:
    """The generated part of the benchmarks page: the GPU status, the latest full (else quick)
    run in detail, and every run in one history table."""
    out = []
    if not any(has_gpu(r) for r in results):
        out.append(NO_GPU + "\n")
    if not results:
        out.append("No benchmark results yet: `benchmarks/results/` holds no run. Run `make bench` "
                   "(or `make bench-quick` for a smoke run) and rebuild the docs.\n")
        return "\n".join(out)
    full = [r for r in results if not r.get("quick") and is_complete(r)]
    latest = (full or results)[-1]
    gpu_runs = [r for r in results if has_gpu(r)]
    out.append(f"## Latest {'full' if full else 'quick'} run\n")
    out.append(render_run(latest, level="###"))
    later = [r for r in results if not r.get("quick") and not is_complete(r)
             and (str(r.get("created", "")), r["_file"]) > (str(latest.get("created", "")), latest["_file"])]
    for r in later:
        out.append(f"## Later run of {', '.join(f'`{n}`' for n in r.get('scripts', {})) or 'no script'}\n")
        out.append(render_run(r, level="###"))
    if gpu_runs and gpu_runs[-1] is not latest:
        out.append("## Latest GPU run\n")
        out.append(render_run(gpu_runs[-1], level="###"))
    out.append("## All runs\n")
    hist = []
    for r in reversed(results):
        row = {"file": f"`{r['_file']}`", "created": r.get("created", ""), "quick": bool(r.get("quick")),
               "machine": machine_line(r.get("machine", {})),
               "scripts": ", ".join(r.get("scripts", {})) or "-",
               "failed": ", ".join(r.get("failures", {})) or "-"}
        hist.append(row)
    out.append(table(hist))
    return "\n".join(out)


# ---------------------------------------------------------------------- README
README_START, README_END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _span(values: Sequence[float], fmt) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


def render_readme(result: dict[str, Any], L: int = 8) -> str:
    """The README's benchmark section, every number taken from one combined ``result``.

    ``python benchmarks/summarize.py --readme README.md`` rewrites the block between the
    ``bench-results`` markers with it, and a test checks that the README holds exactly this text
    for the latest full run in ``benchmarks/results/``: no speed claim there is typed by hand.
    """
    scripts = result.get("scripts", {})
    m = result.get("machine", {})
    gpu = has_gpu(result)
    out = [f"Recorded by `make bench` (`benchmarks/results/{result.get('_file', '?')}`), run alone with "
           f"`OMP_WAIT_POLICY=PASSIVE`, on {machine_line(m)}{'' if gpu else ': no GPU machine was available'}."]
    decodes = [(n, scripts[n]) for n in ("decode", "decode_shift") if scripts.get(n, {}).get("limits")]
    if decodes:
        cfg = decodes[0][1].get("config", {})
        out.append(f"\nDecoding at batch 1, {cfg.get('prompt', '?')}-token prompts, {cfg.get('new_tokens', '?')} "
                   f"forced new tokens, L={L}: decode-phase tokens/s, medians over {cfg.get('repeats', '?')} "
                   "interleaved rounds, every ratio paired within a round.\n")
        lines = ["| model | shift | AR | multi-step (tau 0.85) | one-step unfused | one-step fused | TPF fused "
                 "| fused / AR (of its limit) | fused / unfused | of 2·t(L)/t(2L) | of (t(L)+t_write)/t(2L) |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, data in decodes:
            by = {(r["model"], r["L"], r["batch"], r["method"]): r for r in data["rows"]}
            for lim in data["limits"]:
                if lim["L"] != L:
                    continue
                rate = {meth: by[(lim["model"], L, 1, meth)]["tokens_per_s_decode"] for meth in
                        ("ar", "multistep", "onestep_unfused", "onestep_fused")}
                lines.append(
                    f"| {lim['model']} | {'yes' if name == 'decode_shift' else 'no'} | {rate['ar']:.1f} | "
                    f"{rate['multistep']:.1f} | {rate['onestep_unfused']:.1f} | {rate['onestep_fused']:.1f} | "
                    f"{by[(lim['model'], L, 1, 'onestep_fused')]['tpf']:g} | {_x(lim['fused_vs_ar'])} "
                    f"({_pct(lim['fraction_of_ar_limit'])}) | {_x(lim['fused_vs_unfused'])} | "
                    f"{_pct(lim['fraction_of_unfused_limit'])} | {_pct(lim['fraction_of_unfused_limit_exact'])} |")
        out.append("\n".join(lines) + "\n")
        lims = [lim for _, d in decodes for lim in d["limits"] if lim["L"] == L]
        growth = [c2["seconds"] / c1["seconds"] for _, d in decodes for c1 in d["forward_cost"]
                  for c2 in d["forward_cost"] if c1["L"] == c2["L"] == L and c1["model"] == c2["model"]
                  and c1["tokens"] == 1 and c2["tokens"] == 2 * L]
        out.append(
            f"On this machine a cached forward over 2L={2 * L} tokens costs {_span(growth, _x)} one over a single "
            f"token, so no sampler can beat AR by more than L·t(1)/t(2L) = "
            f"{_span([x['fused_vs_ar_limit'] for x in lims], _x)} here; on a GPU that bound approaches L. "
            "The conventional bound against the unfused sampler, 2·t(L)/t(2L), prices both of its passes as "
            "a forward with the LM head on L rows. This unfused sampler's block-write pass runs the head on "
            "no row (one with shift: the next block's first token), so its real bound is "
            "(t(L)+t_write)/t(2L), all four costs timed in the same rounds. A fused block costs one cached "
            "forward over 2L tokens and nothing more; the fraction of the conventional bound therefore "
            "reaches 90% only while the write pass costs at least 0.8·t(L), a property of the machine and "
            "the model's shape, not of the sampler.")
        for name, data in decodes:
            rounds = [f"{lim['model']} {', '.join(_pct(v) for v in lim.get('fraction_of_unfused_limit_rounds', []))}"
                      for lim in data["limits"] if lim["L"] == L and lim.get("fraction_of_unfused_limit_rounds")]
            if rounds:
                out.append(f"\nPer round, fused/unfused as a fraction of 2·t(L)/t(2L) ({name}, L={L}): "
                           + "; ".join(rounds) + ".")
        batch8 = [r for _, d in decodes for r in d["rows"]
                  if r["L"] == L and r["batch"] == 8 and r["method"] == "onestep_fused" and "vs_ar_decode" in r]
        if batch8:
            out.append(f"\nAt batch 8, L={L}, fused decodes "
                       + ", ".join(f"{_x(r['vs_ar_decode'])} ({r['model']})" for r in batch8) + " as fast as AR.")
        out.append("")
    rad = scripts.get("train_rad_vs_dup")
    if rad and rad.get("summary"):
        s, rows = rad["summary"], {r["layout"]: r for r in rad["rows"]}
        r0, d0 = rows["rad"], rows["full_dup"]
        out.append(
            f"RAD against full duplication, one forward+backward of the diffusion loss on the 0.5B-shaped model "
            f"({s.get('model', {}).get('layers', '?')} layers), P={r0['P']}, R={r0['R']}, L={r0['L']}: RAD feeds "
            f"{r0['tokens']:,} tokens instead of {d0['tokens']:,}, is **{_x(s['speedup_paired_median'])} faster "
            f"(paired median)** and needs **{s['peak_mem_ratio_rad_over_dup']:.2f}x the peak memory** "
            f"({r0['peak_mem_bytes'] / 1e9:.1f} GB against {d0['peak_mem_bytes'] / 1e9:.1f} GB).\n")
    att = scripts.get("attention_backends")
    if att and att.get("rows"):
        flex = [r for r in att["rows"] if r["backend"] == "flex_attention"]
        sdpa = {r["slots"]: r for r in att["rows"] if r["backend"] == "sdpa"}
        if flex:
            big = max(flex, key=lambda r: r["slots"])
            out.append(
                f"Attention backends (one RAD attention op, {min(r['slots'] for r in flex):,}-{big['slots']:,} slots): "
                f"flex_attention with a cached block mask ({big['mode']}) agrees with SDPA with a dense mask "
                f"(largest difference {max(r['max_abs_diff_vs_sdpa'] for r in flex):.1e}) and needs a "
                f"{sdpa[big['slots']]['mask_bytes'] / big['mask_bytes']:,.0f}x smaller mask at {big['slots']:,} slots; "
                f"it runs at {_span([r['vs_sdpa'] for r in flex], lambda v: f'{v:.2f}x')} SDPA's speed here."
                + "".join(f" Note: {n}." for n in att.get("notes", [])) + "\n")
    stem = str(result.get("_file", "?")).removesuffix(".json")
    out.append(f"Full tables: `benchmarks/results/{stem}.md`.")
    return "\n".join(out).rstrip() + "\n"


def replace_readme_block(text: str, block: str) -> str:
    """``text`` with the part between the bench-results markers replaced by ``block``."""
    try:
        start = text.index(README_START) + len(README_START)
        end = text.index(README_END)
    except ValueError:
        raise ValueError(f"README has no {README_START} ... {README_END} block") from None
    return text[:start] + "\n" + block + text[end:]


def is_complete(result: dict[str, Any]) -> bool:
    """Whether a combined result is a run of the whole set (it has ``decode``), not of a few
    scripts alone (``run_all.py --only lora``): only whole runs feed the README and head the page."""
    return "decode" in result.get("scripts", {})


def latest_full(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    full = [r for r in results if not r.get("quick") and is_complete(r)]
    return full[-1] if full else None


# ---------------------------------------------------------------------- plot
def plot_run(result: dict[str, Any], path: Path) -> Path | None:
    """One PNG with a panel per script that has rows: decode throughput, RAD vs duplication,
    attention time against length, LoRA vs full fine-tuning. Returns the path, or None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scripts = result.get("scripts", {})
    panels = [n for n in ("decode", "train_rad_vs_dup", "attention_backends", "lora") if scripts.get(n, {}).get("rows")]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, name in zip(axes[0], panels):
        rows = scripts[name]["rows"]
        if name == "decode":
            keys = sorted({(r["model"], r["L"], r["batch"]) for r in rows}, key=str)
            methods = list(dict.fromkeys(r["method"] for r in rows))
            width = 0.8 / max(len(methods), 1)
            for j, m in enumerate(methods):
                vals = [next((r["tokens_per_s"] for r in rows if (r["model"], r["L"], r["batch"]) == k
                              and r["method"] == m), 0.0) for k in keys]
                ax.bar([i + j * width for i in range(len(keys))], vals, width, label=m)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))],
                          [f"{m}\nL={L} b={b}" for m, L, b in keys], fontsize=6)
            ax.set_ylabel("tokens/s (prefill included)")
            ax.set_title("decoding throughput", fontsize=9)
            ax.legend(fontsize=7)
        elif name == "train_rad_vs_dup":
            labels = [r["layout"] for r in rows]
            ax.bar(labels, [r["wall_s"] for r in rows], color=["#3182bd", "#fd8d3c"][: len(rows)])
            for i, r in enumerate(rows):
                ax.text(i, r["wall_s"], f"{r.get('tokens', '?')} tokens", ha="center", va="bottom", fontsize=8)
            ax.set_ylabel("seconds per forward + backward")
            ax.set_title("one training step: RAD vs full duplication", fontsize=9)
        elif name == "lora":
            ax.bar([r["mode"] for r in rows], [r["wall_s"] for r in rows], color="#31a354")
            for i, r in enumerate(rows):
                ax.text(i, r["wall_s"], f"{r.get('peak_mem_bytes', 0) / 2**30:.2f} GiB", ha="center",
                        va="bottom", fontsize=8)
            ax.set_ylabel("seconds per RAD step (AdamW included)")
            ax.set_title("LoRA vs full fine-tuning (label: peak memory)", fontsize=9)
        else:
            for backend in dict.fromkeys(r["backend"] for r in rows):
                pts = sorted((r["slots"], r["attn_s"]) for r in rows if r["backend"] == backend)
                ax.plot([p for p, _ in pts], [t for _, t in pts], marker="o", label=backend)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("RAD sequence length (slots)")
            ax.set_ylabel("seconds per attention op")
            ax.set_title("attention backends on the RAD mask", fontsize=9)
            ax.legend(fontsize=7)
    m = result.get("machine", {})
    fig.suptitle(f"{result.get('_file', '')}: {m.get('gpu') or m.get('cpu', '?')}"
                 f"{' (quick)' if result.get('quick') else ''}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of combined results")
    ap.add_argument("--out", type=Path, default=None, help="write the docs markdown here (default: stdout)")
    ap.add_argument("--run", type=Path, default=None, help="render this one combined result instead")
    ap.add_argument("--readme", type=Path, default=None,
                    help="rewrite this README's bench-results block from the latest full run")
    args = ap.parse_args(argv)
    if args.readme is not None:
        latest = latest_full(load_results(args.results))
        if latest is None:
            print(f"summarize: no full run in {args.results}: README left as it is", file=sys.stderr)
            return 1
        text = replace_readme_block(args.readme.read_text(), render_readme(latest))
        print(f"{'wrote' if write_if_changed(args.readme, text) else 'unchanged'} {args.readme}")
        return 0
    if args.run is not None:
        data = json.loads(args.run.read_text())
        data["_file"] = args.run.name
        text = render_run(data)
    else:
        text = render_docs(load_results(args.results))
    if args.out is None:
        print(text)
    else:
        print(f"{'wrote' if write_if_changed(args.out, text) else 'unchanged'} {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
