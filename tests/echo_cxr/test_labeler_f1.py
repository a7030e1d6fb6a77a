"""Clinical precision / recall / F1 against hand-computed values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.echo_cxr.clinical_f1 import (
    ClinicalF1Metric,
    clinical_f1,
    clinical_scores,
    count,
    prf_from_counts,
)

F = ("A", "B", "C")
# Three examples. Positive-only view (1 = positive):
#   ref  A: 1 1 0   B: 0 1 0   C: 0 0 0
#   pred A: 1 0 1   B: 0 1 0   C: 1 0 0  (-1 for A in ex 2 counts as positive only if asked)
REFS = [{"A": 1, "B": 0, "C": 0}, {"A": 1, "B": 1, "C": None}, {"A": 0, "B": None, "C": None}]
PREDS = [{"A": 1, "B": None, "C": 1}, {"A": -1, "B": 1, "C": 0}, {"A": 1, "B": None, "C": None}]


def test_positive_only_hand_computed():
    """A: TP1 FP1 FN1 -> P=R=F=1/2.  B: TP1 -> 1.  C: FP1 -> 0 (0/0 precision -> 0).
    micro: TP2 FP2 FN1 -> P=1/2, R=2/3, F1=4/7.  macro F1 = (1/2 + 1 + 0)/3 = 1/2."""
    s = clinical_f1(PREDS, REFS, F)
    assert s.per_finding["A"].f1 == pytest.approx(0.5)
    assert (s.per_finding["B"].precision, s.per_finding["B"].recall, s.per_finding["B"].f1) == (1.0, 1.0, 1.0)
    assert (s.per_finding["C"].precision, s.per_finding["C"].recall, s.per_finding["C"].f1) == (0.0, 0.0, 0.0)
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (2, 2, 1)
    assert s.micro.precision == pytest.approx(0.5) and s.micro.recall == pytest.approx(2 / 3)
    assert s.micro.f1 == pytest.approx(4 / 7)
    assert s.macro.f1 == pytest.approx(0.5)
    assert s.macro.precision == pytest.approx((0.5 + 1 + 0) / 3)


def test_uncertain_as_positive_hand_computed():
    """With -1 -> positive, A in example 2 becomes a TP: A TP2 FP1 FN0 -> F1 = 4/5."""
    s = clinical_f1(PREDS, REFS, F, uncertain_as_positive=True)
    assert s.per_finding["A"].f1 == pytest.approx(0.8)
    assert (s.micro.tp, s.micro.fp, s.micro.fn) == (3, 2, 0)


def test_status_mode_hand_computed():
    """Statuses must match. A: ex1 1=1 TP; ex2 -1 vs 1 FP+FN; ex3 1 vs 0 FP+FN -> TP1 FP2 FN2.
    B: ex1 None vs 0 FN; ex2 1=1 TP -> TP1 FN1.  C: ex1 1 vs 0 FP+FN; ex2 0 vs None FP -> FP2 FN1."""
    s = clinical_f1(PREDS, REFS, F, mode="status")
    assert [(p.tp, p.fp, p.fn) for p in s.per_finding.values()] == [(1, 2, 2), (1, 0, 1), (0, 2, 1)]
    assert s.micro.f1 == pytest.approx(2 * 2 / (2 * 2 + 4 + 4))
    assert s.per_finding["B"].f1 == pytest.approx(2 / 3)


def test_perfect_and_empty():
    perfect = clinical_f1(REFS, REFS, F)
    assert perfect.micro.f1 == 1.0 and perfect.per_finding["C"].f1 == 0.0  # no positives at all: 0/0 -> 0
    assert clinical_f1(REFS, REFS, F, zero_division=1.0).macro.f1 == 1.0
    assert prf_from_counts(0, 0, 0, zero_division=1.0).f1 == 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from([1, 0, -1, None])] * 6), min_size=1, max_size=12))
def test_matches_sklearn(rows):
    """Positive-only micro / macro / per-finding equal sklearn's multilabel F1 (zero_division=0)."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    preds = [dict(zip(F, r[:3])) for r in rows]
    refs = [dict(zip(F, r[3:])) for r in rows]
    yp = np.array([[int(d[f] == 1) for f in F] for d in preds])
    yr = np.array([[int(d[f] == 1) for f in F] for d in refs])
    s = clinical_f1(preds, refs, F)
    kw = dict(zero_division=0)
    assert s.micro.f1 == pytest.approx(f1_score(yr, yp, average="micro", **kw))
    assert s.macro.f1 == pytest.approx(f1_score(yr, yp, average="macro", **kw))
    assert s.micro.precision == pytest.approx(precision_score(yr, yp, average="micro", **kw))
    assert s.macro.recall == pytest.approx(recall_score(yr, yp, average="macro", **kw))
    per = f1_score(yr, yp, average=None, **kw)
    assert [s.per_finding[f].f1 for f in F] == pytest.approx(list(per))


def test_flat_scores_and_errors():
    flat = clinical_scores(PREDS, REFS, F)
    assert flat["pos_micro_f1"] == pytest.approx(4 / 7) and flat["pos_f1/B"] == 1.0
    assert flat["status_micro_f1"] == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        clinical_f1(PREDS[:2], REFS, F)
    with pytest.raises(ValueError, match="mode"):
        clinical_f1(PREDS, REFS, F, mode="bogus")


def test_torchmetrics_wrapper_accumulates():
    """Updating in two batches equals one call over everything."""
    m = ClinicalF1Metric(F)
    m.update(PREDS[:1], REFS[:1])
    m.update(PREDS[1:], REFS[1:])
    out = m.compute()
    assert float(out["micro_f1"]) == pytest.approx(4 / 7) and float(out["macro_f1"]) == pytest.approx(0.5)
    assert torch.equal(m.counts, torch.tensor([count(PREDS, REFS, F)[f] for f in F]))
