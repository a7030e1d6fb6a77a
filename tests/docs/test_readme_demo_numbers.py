"""The README's demo table is the recorded demo run (docs/demo/results.json), not hand-typed numbers."""

import json

import pytest

from tests.docs.readme_tables import ROOT, readme_rows

COLUMNS = ["clinical_macro_f1", "clinical_micro_f1", "rouge_l", "bleu4", "cider_d", "semscore", "tokens_per_s",
           "tpf", "nfe"]

def test_readme_demo_table_matches_the_recorded_run() -> None:
    recorded = {r["variant"]: r for r in json.loads((ROOT / "docs/demo/results.json").read_text())["rows"]
                if r["lang"] == "en"}
    rows = readme_rows("demo-results", len(COLUMNS))
    assert set(rows) == set(recorded), "README demo table and docs/demo/results.json list different variants"
    for variant, cells in rows.items():
        for col, cell in zip(COLUMNS, cells):
            decimals = len(cell.split(".")[1]) if "." in cell else 0
            assert float(cell) == pytest.approx(recorded[variant][col], abs=0.51 * 10**-decimals), (variant, col)
