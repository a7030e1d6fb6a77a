"""CIDEr-D, the coco-caption consensus metric (pycocoevalcap's ``Cider`` class)."""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import Tensor

from blockdistill.metrics.string_state import TokenizedPairs
from blockdistill.metrics.text import LANGS, ngram_counts

NGram = tuple[str, ...]


class CIDErD(TokenizedPairs):
    """CIDEr-D: tf-idf n-gram cosine similarity with clipping and a length penalty.

    What is computed (identical to pycocoevalcap's ``Cider``, which *is* CIDEr-D):

    - document frequency ``df(g)`` = number of samples whose references contain n-gram g,
      over the *whole accumulated corpus* (all batches, all processes);
    - each sentence becomes, per order n=1..4, a vector ``tf(g) * (log N - log max(1, df(g)))``
      where N is the number of samples;
    - per order: ``sum_g min(h_g, r_g) * r_g / (|h| |r|)`` (candidate weights clipped by the
      reference's), times ``exp(-delta**2 / (2 * sigma**2))``, sigma = 6;
    - sample score = 10 * mean over orders, averaged over its references; corpus = mean.

    ``delta`` follows coco-caption's code: the difference of the *bigram* counts of
    hypothesis and reference, which equals the difference of token counts unless one side
    is empty. Kept for parity.

    Maximum: 10, reached by a sample whose hypothesis equals every one of its references,
    has at least 4 tokens, and has, at each order, an n-gram that not every sample's
    references contain (an n-gram present in all of them has idf 0 and carries no weight).
    A corpus of one sample therefore always scores 0.

    Because df needs the whole corpus, the tokenized texts are kept (as byte tensors, see
    :mod:`blockdistill.metrics.string_state`) and everything is computed in ``compute``.

    Example:
        >>> metric = CIDErD()
        >>> metric.update(["no pleural effusion or pneumothorax", "the heart is enlarged"],
        ...               ["no pleural effusion or pneumothorax", "heart size is normal"])
        >>> round(metric.compute().item(), 4)
        5.625
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, n: int = 4, sigma: float = 6.0, lang: str = "en", **kwargs) -> None:
        """
        Args:
            n: largest n-gram order (coco: 4).
            sigma: standard deviation of the Gaussian length penalty (coco: 6).
            lang: tokenization language, see :func:`blockdistill.metrics.text.tokenize`.
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a positive int (the largest n-gram order)")
        if not sigma > 0:
            raise ValueError(f"sigma={sigma!r} must be > 0 (std of the length penalty)")
        if lang not in LANGS:
            raise ValueError(f"lang={lang!r} is not supported; expected one of {LANGS}")
        self.n, self.sigma, self.lang = n, float(sigma), lang

    def compute(self) -> Tensor:
        """Corpus CIDEr-D, a float64 scalar in [0, 10]; 0 for an empty corpus."""
        samples = [(ngram_counts(hyp.split(), self.n), [ngram_counts(r.split(), self.n) for r in refs])
                   for hyp, refs in self.pairs()]
        if not samples:
            return torch.tensor(0.0, dtype=torch.float64)
        return torch.tensor(self._corpus_score(samples), dtype=torch.float64)

    def _corpus_score(self, samples: list[tuple[Counter[NGram], list[Counter[NGram]]]]) -> float:
        """Mean CIDEr-D of (hypothesis counts, reference counts) samples."""
        df: Counter[NGram] = Counter()
        for _, refs in samples:
            df.update({g for r in refs for g in r})
        log_n = math.log(float(len(samples)))
        scores = []
        for hyp, refs in samples:
            vh = self._tfidf(hyp, df, log_n)
            total = [0.0] * self.n
            for r in refs:
                for k, v in enumerate(self._similarity(vh, self._tfidf(r, df, log_n))):
                    total[k] += v
            scores.append(sum(total) / self.n / len(refs) * 10.0)
        return sum(scores) / len(scores)

    def _tfidf(
        self, counts: Counter[NGram], df: Counter[NGram], log_n: float
    ) -> tuple[list[dict[NGram, float]], list[float], int]:
        """Per-order tf-idf vectors, their L2 norms, and the bigram count (coco's "length")."""
        vec: list[dict[NGram, float]] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df[gram])))
            vec[k][gram] = w
            norm[k] += w**2
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def _similarity(
        self,
        hyp: tuple[list[dict[NGram, float]], list[float], int],
        ref: tuple[list[dict[NGram, float]], list[float], int],
    ) -> list[float]:
        """Clipped cosine per order, times the Gaussian length penalty."""
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.e ** (-(float(lh - lr) ** 2) / (2 * self.sigma**2))
        out = []
        for k in range(self.n):
            val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
            if nh[k] != 0 and nr[k] != 0:
                val /= nh[k] * nr[k]
            out.append(val * penalty)
        return out
