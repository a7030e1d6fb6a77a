"""METEOR: coco-caption's jar, run on our tokenization; clear errors when it cannot run."""

from __future__ import annotations

import importlib.util

import pytest

from blockdistill.metrics import METEOR, tokenize
from blockdistill.metrics import meteor as meteor_module


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meteor_module.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="needs a Java runtime: no 'java' on PATH"):
        METEOR()


def test_missing_pycocoevalcap_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        meteor_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pycocoevalcap" else real(name, *a),
    )
    with pytest.raises(ModuleNotFoundError, match="'pycocoevalcap' package, which is not"):
        METEOR()


@pytest.mark.slow
def test_meteor_matches_the_jar_on_iu_xray(iu_pairs_multi) -> None:
    """Same number as pycocoevalcap's Meteor fed our tokens (3 JVM starts, ~25 s): checks
    the record round trip, multi-reference layout and corpus aggregation; copies score 1."""
    from pycocoevalcap.meteor.meteor import Meteor

    preds, targets = iu_pairs_multi
    preds, targets = list(preds[:30]), [list(t[:2]) for t in targets[:30]]
    metric = METEOR()
    metric.update(preds[:10], targets[:10])
    metric.update(preds[10:], targets[10:])
    ours = metric.compute().item()
    res = {i: [" ".join(tokenize(p))] for i, p in enumerate(preds)}
    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(targets)}
    reference, _ = Meteor().compute_score(gts, res)
    assert ours == reference
    assert 0.2 < ours < 0.8

    copies = METEOR()
    copies.update(preds[:5], preds[:5])
    assert copies.compute().item() == pytest.approx(1.0)
