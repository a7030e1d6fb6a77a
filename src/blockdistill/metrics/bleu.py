"""Corpus BLEU-1..n, computed exactly as coco-caption / pycocoevalcap does."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from blockdistill.metrics.text import LANGS, as_reference_lists, ngram_counts, tokenize


class BLEU(Metric):
    """Corpus BLEU-1..n (default n=4) with pycocoevalcap's exact conventions.

    Per prediction it counts clipped n-gram matches (clipped by the largest count of that
    n-gram in any one reference), the number of n-grams, the prediction length and the
    reference length closest to it (ties go to the shorter reference). The corpus score
    sums those counts over all predictions, so it is *not* a mean of sentence BLEUs:

    ``BLEU-k = BP * (prod_{i<=k} (correct_i + 1e-15) / (guess_i + 1e-9)) ** (1/k)``
    with ``BP = exp(1 - ref_len / test_len)`` when ``test_len < ref_len`` else 1.

    The two tiny constants are pycocoevalcap's, so results agree with it to float rounding.
    All states are integer sums, so batches and processes merge exactly.

    Example:
        >>> metric = BLEU()
        >>> metric.update(["The heart is normal in size."],
        ...               [["The heart size is normal.", "Heart is normal in size."]])
        >>> {k: round(v.item(), 3) for k, v in metric.compute().items()}
        {'bleu_1': 1.0, 'bleu_2': 1.0, 'bleu_3': 0.909, 'bleu_4': 0.841}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    guess: Tensor
    test_len: Tensor
    ref_len: Tensor

    def __init__(self, n: int = 4, lang: str = "en", **kwargs) -> None:
        """
        Args:
            n: largest n-gram order; ``compute`` returns BLEU-1..n.
            lang: tokenization language, see :func:`blockdistill.metrics.text.tokenize`.
            **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``process_group``).
        """
        super().__init__(**kwargs)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive int (the largest n-gram order)")
        if lang not in LANGS:
            raise ValueError(f"lang={lang!r} is not supported; expected one of {LANGS}")
        self.n = n
        self.lang = lang
        # int64 sums: exact, and order-independent across batches and ranks.
        self.add_state("correct", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("guess", torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("test_len", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("ref_len", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Add N predictions, each with one reference (str) or several (list of str)."""
        correct = [0] * self.n
        guess = [0] * self.n
        test_total = ref_total = 0
        for pred, refs in zip(preds, as_reference_lists(preds, target)):
            hyp = tokenize(pred, self.lang)
            ref_tokens = [tokenize(r, self.lang) for r in refs]
            max_ref: Counter[tuple[str, ...]] = Counter()
            for r in ref_tokens:
                max_ref |= ngram_counts(r, self.n)  # |= keeps the max count per n-gram
            for gram, count in ngram_counts(hyp, self.n).items():
                correct[len(gram) - 1] += min(count, max_ref[gram])
            for k in range(self.n):
                guess[k] += max(0, len(hyp) - k)
            test_total += len(hyp)
            # "closest" effective reference length; ties go to the shorter one.
            ref_total += min((abs(len(r) - len(hyp)), len(r)) for r in ref_tokens)[1]
        self.correct += torch.tensor(correct, dtype=torch.long, device=self.correct.device)
        self.guess += torch.tensor(guess, dtype=torch.long, device=self.guess.device)
        self.test_len += test_total
        self.ref_len += ref_total

    def compute(self) -> dict[str, Tensor]:
        """Returns ``{"bleu_1": t, ..., "bleu_n": t}``, float64 scalars in [0, 1]."""
        correct = self.correct.tolist()
        guess = self.guess.tolist()
        test_len, ref_len = int(self.test_len), int(self.ref_len)
        # Same arithmetic, in the same order, as pycocoevalcap's BleuScorer.compute_score.
        scores = []
        prod = 1.0
        for k in range(self.n):
            prod *= float(correct[k] + 1e-15) / (guess[k] + 1e-9)
            scores.append(prod ** (1.0 / (k + 1)))
        ratio = (test_len + 1e-15) / (ref_len + 1e-9)
        if ratio < 1:
            scores = [s * math.exp(1 - 1 / ratio) for s in scores]
        return {f"bleu_{k + 1}": torch.tensor(s, dtype=torch.float64) for k, s in enumerate(scores)}
