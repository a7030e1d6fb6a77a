"""The README's demo-text table is the recorded `make demo-text` run (docs/demo-text/results.json)."""

import json

import pytest

from tests.docs.readme_tables import ROOT, readme_block, readme_rows

COLUMNS = ["clinical_macro_f1", "rouge_l", "bleu4", "cider_d", "semscore", "repetition_rate", "tokens_per_s_decode",
           "tpf", "nfe"]

def test_readme_demo_text_table_matches_the_recorded_run() -> None:
    recorded = {r["variant"]: r for r in json.loads((ROOT / "docs/demo-text/results.json").read_text())["rows"]}
    rows = readme_rows("demo-text-results", len(COLUMNS))
    assert set(rows) == set(recorded), "README demo-text table and docs/demo-text/results.json list different variants"
    for variant, cells in rows.items():
        for col, cell in zip(COLUMNS, cells):
            decimals = len(cell.split(".")[1]) if "." in cell else 0
            assert float(cell) == pytest.approx(recorded[variant][col], abs=0.51 * 10**-decimals), (variant, col)


def test_readme_demo_text_targets_match_the_recorded_run() -> None:
    """Each target line in the block (`- name: measured ... met|missed`) says what results.json says."""
    block = readme_block("demo-text-results")
    targets = json.loads((ROOT / "docs/demo-text/results.json").read_text())["targets"]
    for t in targets:
        line = next((ln for ln in block.splitlines() if f"`{t['name']}`" in ln), None)
        assert line is not None, f"target {t['name']} missing from the README block"
        assert ("**met**" in line) == bool(t["met"]), line
