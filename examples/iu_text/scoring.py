"""Scores of drafted reports: clinical F1 against the input MeSH codes.

* :class:`MeshClinicalScorer` labels each generated report with
  :func:`examples.echo_cxr.labeler.label_report` and compares it with the observations of the
  study's own codes (:func:`examples.iu_text.mesh.mesh_labels`), positive-only, macro and micro
  and per observation (:mod:`examples.echo_cxr.clinical_f1`). It is an extra scorer for the
  library's evaluation runner: the codes travel in each example's ``mesh`` field.
* :func:`labeler_ceiling` is the same F1 with the radiologists' own text in place of a model's:
  how far the labeler itself agrees with the human codes, the ceiling every model row sits under.

The repetition rate is the library's (:class:`blockdistill.metrics.RepetitionRate`, reported by
the evaluation runner's :class:`~blockdistill.evaluation.TextMetrics` as ``repetition_rate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from examples.echo_cxr.clinical_f1 import count, scores_from_counts
from examples.echo_cxr.labeler import label_report
from examples.iu_text.mesh import OBSERVATIONS, mesh_labels


def mesh_f1(pred_labels: Sequence[Mapping[str, int | None]], codes: Sequence[Sequence[str]],
            observations: Sequence[str] = OBSERVATIONS, observed_only: bool = True) -> dict[str, Any]:
    """Positive-only F1 of label dicts against the codes' observations: ``macro``, ``micro``
    (P/R/F1) and ``per_observation`` (F1 and support). ``observed_only``: average only observations
    with a label on either side (one nobody states would add 0/0 = 0 to the macro average)."""
    refs = [mesh_labels(c) for c in codes]
    counts = count(list(pred_labels), refs, observations, "positive", False)
    if observed_only and any(sum(c) for c in counts.values()):
        counts = {f: c for f, c in counts.items() if sum(c)}
    s = scores_from_counts(counts)
    return {"macro": {"precision": s.macro.precision, "recall": s.macro.recall, "f1": s.macro.f1},
            "micro": {"precision": s.micro.precision, "recall": s.micro.recall, "f1": s.micro.f1},
            "per_observation": {f: {"f1": prf.f1, "support": prf.tp + prf.fn} for f, prf in s.per_finding.items()},
            "n": len(refs)}


def labeler_ceiling(texts: Sequence[str], codes: Sequence[Sequence[str]]) -> dict[str, Any]:
    """:func:`mesh_f1` of the labeler run on human-written ``texts`` against their own ``codes``."""
    if len(texts) != len(codes):
        raise ValueError(f"{len(texts)} texts but {len(codes)} code lists")
    return mesh_f1([label_report(t, "en") for t in texts], codes)


@dataclass
class MeshClinicalScorer:
    """Extra scorer for :func:`blockdistill.evaluation.evaluate_variants`: clinical F1 of the
    generated reports against each example's ``mesh`` codes."""

    def __call__(self, preds: list[str], refs: list[list[str]], metas: list[dict[str, Any]]) -> dict[str, float]:
        missing = [i for i, m in enumerate(metas) if "mesh" not in m]
        if missing:
            raise KeyError(f"examples {missing[:5]} carry no 'mesh' codes; build them with examples.iu_text.prompts.build_sample")
        s = mesh_f1([label_report(p, "en") for p in preds], [m["mesh"] for m in metas])
        out = {f"clinical_{avg}_{k}": s[avg][k] for avg in ("macro", "micro") for k in ("precision", "recall", "f1")}
        out.update({f"clinical_f1/{f}": v["f1"] for f, v in s["per_observation"].items()})
        return out
