"""The README's demo table is the recorded demo run (docs/demo/results.json), not hand-typed numbers."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4", "cider_d", "semscore", "tokens_per_s",
           "tpf", "nfe"]


def _readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- demo-results:start -->"):text.index("<!-- demo-results:end -->")]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + len(COLUMNS) and re.fullmatch(r"[A-Za-z_0-9]+", cells[0]) and cells[0] != "variant":
            rows[cells[0]] = cells[1:]
    return rows


def test_readme_demo_table_matches_the_recorded_run() -> None:
    recorded = {r["variant"]: r for r in json.loads((ROOT / "docs/demo/results.json").read_text())["rows"]
                if r["lang"] == "en"}
    rows = _readme_rows()
    assert set(rows) == set(recorded), "README demo table and docs/demo/results.json list different variants"
    for variant, cells in rows.items():
        for col, cell in zip(COLUMNS, cells):
            decimals = len(cell.split(".")[1]) if "." in cell else 0
            assert float(cell) == pytest.approx(recorded[variant][col], abs=0.51 * 10**-decimals), (variant, col)
