"""benchmarks/iu_text_levers.py on the tiny stand-in: every lever combination timed, per stage."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CFG = [str(ROOT / "examples/iu_text/configs/cpu"), str(ROOT / "examples/iu_text/configs/tiny")]


def test_the_levers_benchmark_times_every_variant_of_both_stages(few_reports, tmp_path, monkeypatch):
    from examples.iu_text.config import load_text_config
    from examples.iu_text.pipeline import run

    overrides = [f"run_dir={tmp_path / 'run'}", f"data.reports={few_reports}"]
    run(load_text_config(CFG, overrides), stages=["data"])
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("iu_text_levers", None)
    import iu_text_levers

    out = tmp_path / "levers.json"
    res = iu_text_levers.main(["--config", *CFG, "--run-dir", str(tmp_path / "run"), "--steps", "1", "--rounds", "1",
                               "--threads", "1", "--out", str(out), f"data.reports={few_reports}"])
    rows = res["rows"]
    assert [(r["stage"], r["variant"]) for r in rows] == [
        (s, v.name) for s in ("ar", "rad") for v in iu_text_levers.VARIANTS]
    for r in rows:
        assert r["seconds_per_step"] > 0 and len(r["rounds_s"]) == 1
        assert 0 <= r["padding"] < 1
    by = {(r["stage"], r["variant"]): r for r in rows}
    assert by[("ar", "fp32")]["speedup_vs_fp32"] == 1.0
    for stage in ("ar", "rad"):  # the frozen variants train fewer weights: the embedding (tied head) is out
        assert by[(stage, "bf16+frozen")]["trainable_params"] < by[(stage, "bf16")]["trainable_params"]
    assert json.loads(out.read_text())["rows"] == rows
