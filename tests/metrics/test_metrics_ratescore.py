"""RaTEScore adapter: clear errors when the package or its models are missing, never a dummy."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from blockdistill.metrics import RaTEScore


def _model_dir(root: Path, name: str) -> Path:
    """A directory that passes the "is a local HF model" check (has config.json)."""
    path = root / name
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def test_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Angelakeke/RaTE-NER-Deberta: pass ner_model_path"):
        RaTEScore()
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"ner_model_path=.*nowhere.*does not exist"):
        RaTEScore(ner_model_path=missing, synonym_model_path=missing)
    ner = _model_dir(tmp_path, "ner")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"synonym_model_path=.*empty.*BioLORD-2023-C: no config.json"
    ):
        RaTEScore(ner_model_path=ner, synonym_model_path=empty)


def test_missing_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With both model directories present, an absent package is reported as such."""
    monkeypatch.setitem(sys.modules, "RaTEScore", None)  # import now fails, installed or not
    with pytest.raises(ModuleNotFoundError, match="'ratescore' package .* is not installed"):
        RaTEScore(
            ner_model_path=_model_dir(tmp_path, "ner"),
            synonym_model_path=_model_dir(tmp_path, "syn"),
        )


def test_missing_package_dependency_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package imports medspacy at import time; its absence must not read as "not installed"."""
    fake = tmp_path / "pkgs" / "RaTEScore"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import medspacy_missing_for_test\n")
    monkeypatch.syspath_prepend(str(fake.parent))
    monkeypatch.delitem(sys.modules, "RaTEScore", raising=False)
    with pytest.raises(ModuleNotFoundError, match="dependency 'medspacy_missing_for_test' is not"):
        RaTEScore(
            ner_model_path=_model_dir(tmp_path, "ner"),
            synonym_model_path=_model_dir(tmp_path, "syn"),
        )


class _ScriptedScorer:
    """Stands in for a loaded RaTEScore: fixed scores per (candidate, reference) pair."""

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table = table
        self.calls: list[tuple[list[str], list[str]]] = []

    def compute_score(self, candidate_list: list[str], reference_list: list[str]) -> list[float]:
        self.calls.append((candidate_list, reference_list))
        return [self.table[(c, r)] for c, r in zip(candidate_list, reference_list)]


def test_adapter_accumulates_best_reference_mean() -> None:
    """Pairs are flattened for the package, best reference kept, mean over samples."""
    scorer = _ScriptedScorer({("a", "x"): 0.2, ("a", "y"): 0.6, ("b", "z"): 0.9})
    metric = RaTEScore(scorer=scorer)
    metric.update(["a"], [["x", "y"]])
    metric.update(["b"], ["z"])
    assert metric.compute().item() == pytest.approx((0.6 + 0.9) / 2)
    assert scorer.calls[0] == (["a", "a"], ["x", "y"])


def test_scorer_must_score_pairs() -> None:
    with pytest.raises(TypeError, match="compute_score"):
        RaTEScore(scorer=object())
