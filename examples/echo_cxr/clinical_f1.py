"""Clinical efficacy (CE) precision / recall / F1 between labelled reports.

Inputs are label dicts as :func:`examples.echo_cxr.labeler.label_report` returns them
(finding -> 1 positive, 0 negative, -1 uncertain, None or missing = not mentioned); one dict per
generated report (``preds``) and one per reference (``refs``). Two ways to count:

``mode="positive"`` (positive-only, the usual CheXpert/CheXbert CE metric)
    A finding is a label of an example when its status is positive (uncertain counts as
    positive only with ``uncertain_as_positive=True``). Negatives and silence are the same.
``mode="status"``
    Every stated status is a label: (finding, positive), (finding, negative) and (finding,
    uncertain). A report that says "no effusion" where the reference does too scores a true
    positive; saying nothing is a miss. This rewards normalised reports that state negatives.

Micro averages pool TP/FP/FN over findings; macro averages the per-finding scores over the
requested findings. A 0/0 ratio is ``zero_division`` (0.0 by default), as in scikit-learn's
``f1_score(..., zero_division=0)``, which the tests check against.

Usage::

    from examples.echo_cxr.clinical_f1 import clinical_f1, clinical_scores
    scores = clinical_f1(preds, refs, findings=CHEXPERT_FINDINGS)
    scores.micro.f1, scores.macro.f1, scores.per_finding["Cardiomegaly"].f1
    clinical_scores(preds, refs)   # flat dict for logging: pos_micro_f1, status_macro_f1, ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torchmetrics import Metric

from examples.echo_cxr.labeler import CHEXPERT_FINDINGS, POSITIVE, UNCERTAIN

LabelDict = Mapping[str, "int | float | None"]
MODES = ("positive", "status")


@dataclass(frozen=True)
class PRF:
    """Precision, recall, F1 and the raw counts behind them."""

    precision: float
    recall: float
    f1: float
    tp: int = 0
    fp: int = 0
    fn: int = 0


@dataclass(frozen=True)
class ClinicalF1:
    """Micro and macro averages plus per-finding scores."""

    micro: PRF
    macro: PRF
    per_finding: dict[str, PRF]


def _div(a: float, b: float, zero_division: float) -> float:
    return a / b if b else zero_division


def prf_from_counts(tp: int, fp: int, fn: int, zero_division: float = 0.0) -> PRF:
    """PRF from counts; F1 = 2PR/(P+R), with 0/0 -> ``zero_division``."""
    p = _div(tp, tp + fp, zero_division)
    r = _div(tp, tp + fn, zero_division)
    f = _div(2 * tp, 2 * tp + fp + fn, zero_division)
    return PRF(p, r, f, tp, fp, fn)


def _labels(d: LabelDict, finding: str, mode: str, uncertain_as_positive: bool) -> set[int]:
    """The labels one example carries for ``finding``: {} or {status} (status mode) / {1} (positive mode)."""
    v = d.get(finding)
    if v is None:
        return set()
    v = int(v)
    if mode == "status":
        return {v}
    return {POSITIVE} if v == POSITIVE or (uncertain_as_positive and v == UNCERTAIN) else set()


def count(
    preds: Sequence[LabelDict],
    refs: Sequence[LabelDict],
    findings: Sequence[str],
    mode: str = "positive",
    uncertain_as_positive: bool = False,
) -> dict[str, tuple[int, int, int]]:
    """Per-finding (TP, FP, FN) over all examples."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references; expected one per reference")
    out = {}
    for f in findings:
        tp = fp = fn = 0
        for p, r in zip(preds, refs):
            lp = _labels(p, f, mode, uncertain_as_positive)
            lr = _labels(r, f, mode, uncertain_as_positive)
            tp += len(lp & lr)
            fp += len(lp - lr)
            fn += len(lr - lp)
        out[f] = (tp, fp, fn)
    return out


def scores_from_counts(counts: Mapping[str, tuple[int, int, int]], zero_division: float = 0.0) -> ClinicalF1:
    """Micro / macro / per-finding scores from per-finding (TP, FP, FN)."""
    if not counts:
        raise ValueError("no findings to score; expected at least one")
    per = {f: prf_from_counts(*c, zero_division=zero_division) for f, c in counts.items()}
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    micro = prf_from_counts(tp, fp, fn, zero_division)
    n = len(per)
    macro = PRF(
        sum(s.precision for s in per.values()) / n,
        sum(s.recall for s in per.values()) / n,
        sum(s.f1 for s in per.values()) / n,
        tp, fp, fn,
    )
    return ClinicalF1(micro, macro, per)


def clinical_f1(
    preds: Sequence[LabelDict],
    refs: Sequence[LabelDict],
    findings: Sequence[str] = CHEXPERT_FINDINGS,
    mode: str = "positive",
    uncertain_as_positive: bool = False,
    zero_division: float = 0.0,
) -> ClinicalF1:
    """CE precision / recall / F1 of ``preds`` against ``refs`` (one label dict per report)."""
    return scores_from_counts(count(preds, refs, findings, mode, uncertain_as_positive), zero_division)


def clinical_scores(
    preds: Sequence[LabelDict], refs: Sequence[LabelDict], findings: Sequence[str] = CHEXPERT_FINDINGS
) -> dict[str, float]:
    """Flat dict for logging: ``{pos,status}_{micro,macro}_{precision,recall,f1}`` and ``pos_f1/<finding>``."""
    out: dict[str, float] = {}
    for mode, prefix in (("positive", "pos"), ("status", "status")):
        s = clinical_f1(preds, refs, findings, mode)
        for avg in ("micro", "macro"):
            prf = getattr(s, avg)
            out.update({f"{prefix}_{avg}_precision": prf.precision, f"{prefix}_{avg}_recall": prf.recall,
                        f"{prefix}_{avg}_f1": prf.f1})
        if mode == "positive":
            out.update({f"pos_f1/{f}": v.f1 for f, v in s.per_finding.items()})
    return out


class ClinicalF1Metric(Metric):
    """torchmetrics wrapper: accumulates per-finding TP/FP/FN (summed across processes).

    ``update(preds, refs)`` takes lists of label dicts; ``compute()`` returns
    ``{"micro_f1", "macro_f1", "micro_precision", "micro_recall"}`` as 0-d float tensors.
    """

    full_state_update = False

    def __init__(self, findings: Sequence[str] = CHEXPERT_FINDINGS, mode: str = "positive",
                 uncertain_as_positive: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        self.findings, self.mode, self.uncertain_as_positive = tuple(findings), mode, uncertain_as_positive
        self.add_state("counts", default=torch.zeros(len(self.findings), 3, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[LabelDict], refs: Sequence[LabelDict]) -> None:
        c = count(preds, refs, self.findings, self.mode, self.uncertain_as_positive)
        self.counts += torch.tensor([c[f] for f in self.findings], dtype=torch.long, device=self.counts.device)

    def compute(self) -> dict[str, torch.Tensor]:
        s = scores_from_counts({f: tuple(int(x) for x in row) for f, row in zip(self.findings, self.counts)})
        return {k: torch.tensor(v) for k, v in (("micro_f1", s.micro.f1), ("macro_f1", s.macro.f1),
                                                 ("micro_precision", s.micro.precision), ("micro_recall", s.micro.recall))}
