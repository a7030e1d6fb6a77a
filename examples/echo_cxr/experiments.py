"""Training-recipe experiments on the tiny ECHO demo, kept as data and rendered into the docs.

Each experiment is one run directory of the demo (its ``results.json`` and ``manifest.json``);
``record`` copies the quality rows and stage times out of it into ``docs/demo/experiments.json``
with the settings that differ from the recorded demo, and ``render`` turns that file into the
table of ``docs/demo/experiments.md`` (between its markers). Nothing in the table is typed: a test
checks that the page equals ``render`` of the file.

    python -m examples.echo_cxr.experiments record runs/exp-compl --name complementary \\
        --settings "rad.noise.complementary=true"
    python -m examples.echo_cxr.experiments render      # rewrites the table in docs/demo/experiments.md
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blockdistill.evaluation import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "docs" / "demo" / "experiments.json"
PAGE = ROOT / "docs" / "demo" / "experiments.md"
START, END = "<!-- experiments:start -->", "<!-- experiments:end -->"
KEYS = ("clinical_macro_f1", "rouge_l", "repetition_rate")
VARIANTS = ("ar", "base_multistep_L4", "base_multistep_L8", "base_onestep_L8", "echo_onestep_L8")


def load(path: Path = FILE) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["experiments"] if path.is_file() else []


def record(run_dir: Path, name: str, settings: str, path: Path = FILE) -> dict[str, Any]:
    """Add (or replace) experiment ``name`` from ``run_dir``; returns the entry written."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = [{"variant": r["variant"], "lang": r["lang"], **{k: r[k] for k in KEYS if r.get(k) is not None}}
            for r in results["rows"]]
    entry = {"name": name, "settings": settings, "run_dir": run_dir.name,
             "recorded": time.strftime("%Y-%m-%d"), "cpu": results["machine"]["cpu"],
             "stage_s": {k: round(v["wall_s"], 1) for k, v in manifest.items() if "wall_s" in v},
             "rows": rows}
    entries = [e for e in load(path) if e["name"] != name] + [entry]
    atomic_write_text(path, json.dumps({"experiments": entries}, indent=1, ensure_ascii=False) + "\n")
    return entry


def _cell(rows: Sequence[Mapping[str, Any]], variant: str, lang: str) -> str:
    for r in rows:
        if r["variant"] == variant and r["lang"] == lang:
            return f"{r['clinical_macro_f1']:.3f} / {r['rouge_l']:.3f}"
    return "–"


def render(entries: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table: per experiment and language, macro-F1 / ROUGE-L of each variant."""
    head = ["experiment", "settings", "lang", *VARIANTS, "RAD s", "DCD s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        for lang in ("en", "zh"):
            if not any(r["lang"] == lang for r in e["rows"]):
                continue
            st = e["stage_s"]
            lines.append("| " + " | ".join([e["name"], e["settings"], lang, *(_cell(e["rows"], v, lang) for v in VARIANTS),
                                            f"{st['rad']:.0f}" if "rad" in st else "–",
                                            f"{st['dcd']:.0f}" if "dcd" in st else "–"]) + " |")
    return "\n".join(lines)


def render_page(page: Path = PAGE, path: Path = FILE) -> str:
    text = page.read_text()
    a, b = text.index(START) + len(START), text.index(END)
    return text[:a] + "\n" + render(load(path)) + "\n" + text[b:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.echo_cxr.experiments", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="add a run directory's results")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--name", required=True)
    r.add_argument("--settings", required=True, help="what differs from the recorded demo's config")
    sub.add_parser("render", help="rewrite the table in docs/demo/experiments.md")
    a = ap.parse_args(argv)
    if a.cmd == "record":
        record(a.run_dir, a.name, a.settings)
    atomic_write_text(PAGE, render_page())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
