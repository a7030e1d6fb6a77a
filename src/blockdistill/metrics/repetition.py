"""Repetition rate: the share of a report's n-grams that repeat an earlier n-gram of the same report.

One-step decoders that commit a whole block at once can emit the same fragment twice
("left upper left upper lung", "右侧右侧积液"); n-gram overlap metrics against a reference barely
see it, a clinical labeler not at all. This metric counts it directly, within each report:

    rate = sum over reports of (n-grams that equal an earlier n-gram of that report)
           / sum over reports of (all n-grams of that report)

pooled over the corpus (a long report weighs more than a short one, as every n-gram counts once).
Tokens are :func:`blockdistill.metrics.text.tokenize`'s, so under ``lang="zh"`` each Chinese
character is a token (the token level, where Chinese has no spaces between words) and Latin words
stay whole; punctuation does not count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from blockdistill.metrics.text import LANGS, tokenize


def repetition_counts(tokens: Sequence[str], n: int) -> tuple[int, int]:
    """(n-grams equal to an earlier n-gram of ``tokens``, all n-grams of ``tokens``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams)), len(grams)


class RepetitionRate(Metric):
    """Pooled share of repeated n-grams within each prediction (0 when no prediction has n tokens).

    The references are not used: repetition is a property of the generated text alone. ``update``
    takes them anyway (and ignores them), so it can stand next to the other text metrics.

    States are two integer sums, so batches and processes merge exactly.

    Example:
        >>> metric = RepetitionRate(n=2)
        >>> metric.update(["no effusion , no effusion"])
        >>> round(metric.compute().item(), 4)  # bigrams: (no, effusion) x2, (effusion, no): 1 of 3
        0.3333
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    repeated: Tensor
    total: Tensor

    def __init__(self, n: int = 4, lang: str = "en", **kwargs) -> None:
        """
        Args:
            n: n-gram order (4 by default: short clinical phrases recur legitimately, 4-grams
                rarely do).
            lang: tokenization language, see :func:`blockdistill.metrics.text.tokenize`.
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if lang not in LANGS:
            raise ValueError(f"lang={lang!r} is not supported; expected one of {LANGS}")
        self.n, self.lang = n, lang
        self.add_state("repeated", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]] | None = None) -> None:
        """Add N predictions (``target`` is accepted for a uniform interface and not used)."""
        if isinstance(preds, str):
            raise TypeError("preds must be a list of reports, got one str")
        rep = tot = 0
        for pred in preds:
            r, a = repetition_counts(tokenize(pred, self.lang), self.n)
            rep, tot = rep + r, tot + a
        self.repeated += rep
        self.total += tot

    def compute(self) -> Tensor:
        """The pooled rate, a float64 scalar in [0, 1)."""
        if int(self.total) == 0:
            return torch.tensor(0.0, dtype=torch.float64)
        return self.repeated.double() / self.total.double()
