"""ROUGE-L as coco-caption / pycocoevalcap defines it (beta = 1.2, max over references)."""

from __future__ import annotations

from collections.abc import Sequence

from blockdistill.metrics.mean import SampleMean
from blockdistill.metrics.text import LANGS, as_reference_lists, tokenize


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists, O(len(a) * len(b))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]

def rouge_l_sentence(hyp: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """pycocoevalcap's sentence ROUGE-L of one tokenized hypothesis against its references.

    Precision and recall are maximised over the references *separately* (they may come from
    different references), then ``F = (1 + beta^2) P R / (R + beta^2 P)``. An empty
    hypothesis matches only an empty reference (pycocoevalcap scores that pair 1).
    """
    prec, rec = [], []
    for ref in refs:
        if not hyp or not ref:
            p = r = float(not hyp and not ref)
        else:
            lcs = lcs_length(ref, hyp)
            p, r = lcs / float(len(hyp)), lcs / float(len(ref))
        prec.append(p)
        rec.append(r)
    p, r = max(prec), max(rec)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / float(r + beta**2 * p)


class ROUGEL(SampleMean):
    """Mean sentence ROUGE-L F-measure, matching pycocoevalcap's ``Rouge``.

    Not torchmetrics' ``ROUGEScore``: that one uses F1 (beta = 1), keeps the single reference
    with the best F1, and normalises text its own way. coco-caption uses beta = 1.2 and takes
    the best precision and best recall over references separately, so the numbers differ;
    this class reproduces coco-caption's, the ones report-generation papers quote.

    States are a float64 sum and a count, so batches and processes merge exactly (up to
    summation order).

    Example:
        >>> metric = ROUGEL()
        >>> metric.update(["no pleural effusion"], [["there is no pleural effusion"]])
        >>> round(metric.compute().item(), 4)
        0.7176
    """

    def __init__(self, beta: float = 1.2, lang: str = "en", **kwargs) -> None:
        """
        Args:
            beta: recall weight of the F-measure (coco: 1.2).
            lang: tokenization language, see :func:`blockdistill.metrics.text.tokenize`.
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        if not beta > 0:
            raise ValueError(f"beta={beta!r} must be > 0")
        if lang not in LANGS:
            raise ValueError(f"lang={lang!r} is not supported; expected one of {LANGS}")
        self.beta, self.lang = float(beta), lang

    def update(self, preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Add N predictions, each with one reference (str) or several (list of str)."""
        total = 0.0
        refs_list = as_reference_lists(preds, target)
        for pred, refs in zip(preds, refs_list):
            hyp = tokenize(pred, self.lang)
            total += rouge_l_sentence(hyp, [tokenize(r, self.lang) for r in refs], self.beta)
        self.add_scores(total, len(refs_list))
