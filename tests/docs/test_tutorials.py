"""Every code example the docs include runs, each in a fresh interpreter on one thread.

The tutorial pages include their code from these files (pymdownx.snippets), and the files assert
what the prose claims (e.g. the fused cache decodes what the no-cache reference decodes), so a
change to the library that breaks a tutorial fails here.
"""

from __future__ import annotations

import pytest

from tests.docs.helpers import ROOT, explain, run_python

BUDGET_S = 90  # each is ~3-10 s alone on one core; the tutorials promise well under a minute

EXAMPLES = {
    "convert_hf_model": (["docs/tutorials/convert_hf_model.py"],
                         ["block rules saved with the model", "one-step fused"]),
    "custom_targets": (["docs/tutorials/custom_targets.py"],
                       ["mean-field argmax [0, 0] p = 0.0", "passed: test_first_step_marginals_fall_into_the_trap"]),
    "backbone_family": (["docs/tutorials/backbone_family.py"],
                        ["no backbone family registered for model_type='stablelm'",
                         "default positions: check 1 fails", "offset_gpt2 family: all checks passed"]),
    "layout_example": (["docs/concepts/layout_example.py"], ["n = 12, s = 4", "full duplication slots: 24"]),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs(name: str) -> None:
    args, expected = EXAMPLES[name]
    proc, wall = run_python(args)
    assert proc.returncode == 0, explain(proc)
    for text in expected:
        assert text in proc.stdout, f"{text!r} not printed\n{explain(proc)}"
    assert wall < BUDGET_S, f"{name} took {wall:.0f} s"
    if name == "custom_targets":  # the page shows the worked example's output verbatim
        page = (ROOT / "docs" / "tutorials" / "custom_targets.md").read_text()
        for line in proc.stdout.splitlines()[:3]:
            assert line in page, f"docs/tutorials/custom_targets.md does not show {line!r}"


def test_echo_curation_script_runs_offline_on_real_format_fixtures(tmp_path) -> None:
    """Tutorial 4's curation script, without an LLM, on the MIMIC-CXR and CheXpert-Plus fixtures:
    it must write the three files the lingshu7b config reads."""
    fixtures = ROOT / "tests" / "echo_cxr" / "fixtures"
    out = tmp_path / "curated"
    proc, _ = run_python(["-m", "examples.echo_cxr.data.curate", "--out", str(out), "--mimic", str(fixtures / "mimic_cxr"),
                          "--chexpert", str(fixtures / "chexpert_plus"), "--embedder", "hashing",
                          "--eval-size", "2", "--dcd-size", "2"])
    assert proc.returncode == 0, explain(proc)
    from examples.echo_cxr.config import load_echo_config
    from examples.echo_cxr.data.dataset import read_records

    cfg = load_echo_config(ROOT / "examples" / "echo_cxr" / "configs" / "lingshu7b", all_stages=True)
    for key in ("train_records", "eval_records", "dcd_records"):
        name = getattr(cfg.data, key).rsplit("/", 1)[-1]
        records = read_records(out / name)
        assert records, f"{name} is empty"
        assert all(r.image_paths for r in records)
    assert {r.language for r in read_records(out / "eval.jsonl")} == {"en"}   # offline: no translation
