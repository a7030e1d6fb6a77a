"""The experiments page is rendered from its data file; record/render on a run directory."""

from __future__ import annotations

import json

from examples.echo_cxr import experiments


def test_the_page_is_the_rendering_of_the_recorded_file():
    assert experiments.PAGE.read_text() == experiments.render_page(), \
        "docs/demo/experiments.md is stale: run python -m examples.echo_cxr.experiments render"


def test_record_replaces_by_name_and_render_reads_the_rows(tmp_path):
    run = tmp_path / "exp-x"
    run.mkdir()
    rows = [{"variant": "echo_onestep_L8", "lang": "en", "clinical_macro_f1": 0.91234, "rouge_l": 0.6, "tpf": 8.0},
            {"variant": "ar", "lang": "en", "clinical_macro_f1": 0.95, "rouge_l": 0.64, "repetition_rate": 0.02}]
    (run / "results.json").write_text(json.dumps({"rows": rows, "machine": {"cpu": "test cpu"}}))
    (run / "manifest.json").write_text(json.dumps({"rad": {"wall_s": 100.04}, "dcd": {"wall_s": 200.0}, "x": {}}))
    out = tmp_path / "exp.json"
    experiments.record(run, "x", "a=1", out)
    entry = experiments.record(run, "x", "a=2", out)  # same name: replaced, not appended
    saved = experiments.load(out)
    assert saved == [entry] and entry["settings"] == "a=2" and entry["stage_s"] == {"rad": 100.0, "dcd": 200.0}
    assert entry["rows"][0] == {"variant": "echo_onestep_L8", "lang": "en", "clinical_macro_f1": 0.91234, "rouge_l": 0.6}
    table = experiments.render(saved)
    assert "| x | a=2 | en | 0.950 / 0.640 | – | – | – | 0.912 / 0.600 | 100 | 200 |" in table
    assert "| zh |" not in table  # no Chinese rows, no Chinese line
