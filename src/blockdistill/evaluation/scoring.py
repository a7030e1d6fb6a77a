"""Scores of one group of predictions: the n-gram metrics, the repetition rate, optional SemScore,
extra scorers.

The metrics are :mod:`blockdistill.metrics`' classes, fed the decoded texts exactly as they
are; the tokenization language comes from the group (``"zh"`` for Chinese, else ``"en"``).
An extra scorer is any callable ``(preds, refs, metas) -> dict[str, float]``; a key holding
``"/"`` (e.g. ``"clinical_f1/Cardiomegaly"``) is a detail: kept in JSON, left out of the default
markdown table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from blockdistill.metrics import (
    BLEU,
    ROUGEL,
    CIDErD,
    RepetitionRate,
    SemScore,
    SentenceEncoder,
    bundled_minilm_path,
)

__all__ = ["Scorer", "TextMetrics", "metric_lang", "score_group"]


class Scorer(Protocol):
    """An extra score of a group: one dict of floats for the whole group."""

    def __call__(self, preds: list[str], refs: list[list[str]], metas: list[dict[str, Any]]) -> dict[str, float]:
        """Args:
            preds: N generated texts.
            refs: N lists of reference texts (one or more each).
            metas: N example extras (language, source, labels, ...).
        """
        ...


def metric_lang(lang: str) -> str:
    """Tokenization language of :func:`blockdistill.metrics.tokenize` for a group language:
    ``"zh"`` for Chinese (``zh``, ``zh-cn``, ...), ``"en"`` (whitespace words) otherwise."""
    return "zh" if lang.lower().startswith("zh") else "en"


class TextMetrics:
    """BLEU-1..n, ROUGE-L, CIDEr-D, the repetition rate and, when enabled, SemScore of one group.

    Each call builds fresh metric objects, so CIDEr-D's document frequencies come from that
    group's references only. The SemScore encoder is loaded once, on first use.
    """

    def __init__(self, semscore: bool | str | Path | SentenceEncoder = False, bleu_n: int = 4,
                 repetition_n: int | None = 4) -> None:
        """
        Args:
            semscore: False (skip it), True (bundled MiniLM), a local encoder directory, or a
                loaded :class:`~blockdistill.metrics.SentenceEncoder` to share.
            bleu_n: largest BLEU order; every ``bleu_1..bleu_n`` is reported.
            repetition_n: n of ``repetition_rate`` (:class:`~blockdistill.metrics.RepetitionRate`,
                token n-grams, each Chinese character a token); None leaves it out.
        """
        if bleu_n < 1:
            raise ValueError(f"bleu_n must be >= 1, got {bleu_n}")
        if repetition_n is not None and repetition_n < 1:
            raise ValueError(f"repetition_n must be >= 1 or None, got {repetition_n}")
        self.bleu_n, self.repetition_n = bleu_n, repetition_n
        self._semscore = semscore
        self._encoder: SentenceEncoder | None = semscore if isinstance(semscore, SentenceEncoder) else None

    @property
    def semscore(self) -> bool:
        return self._semscore is not False

    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            path = bundled_minilm_path() if self._semscore is True else Path(self._semscore)
            self._encoder = SentenceEncoder(path)
        return self._encoder

    def __call__(self, preds: Sequence[str], refs: Sequence[Sequence[str]], lang: str) -> dict[str, float]:
        """Scores of N predictions against their references; ``lang`` is the group's language."""
        tl = metric_lang(lang)
        preds, refs = list(preds), [list(r) for r in refs]
        out: dict[str, float] = {}
        bleu = BLEU(n=self.bleu_n, lang=tl)
        bleu.update(preds, refs)
        out.update({k: float(v) for k, v in bleu.compute().items()})
        for name, metric in (("rouge_l", ROUGEL(lang=tl)), ("cider_d", CIDErD(lang=tl))):
            metric.update(preds, refs)
            out[name] = float(metric.compute())
        if self.repetition_n is not None:
            rep = RepetitionRate(n=self.repetition_n, lang=tl)
            rep.update(preds)
            out["repetition_rate"] = float(rep.compute())
        if self.semscore:
            sem = SemScore(encoder=self.encoder())
            sem.update(preds, refs)
            out["semscore"] = float(sem.compute())
        return out


def score_group(preds: Sequence[str], refs: Sequence[Sequence[str]], metas: Sequence[dict[str, Any]], lang: str,
                metrics: TextMetrics, scorers: Mapping[str, Scorer] | None = None) -> dict[str, float]:
    """Every score of one group: ``metrics`` then each extra scorer's keys.

    Raises ``ValueError`` when a scorer returns a key already taken (scores never overwrite).
    """
    out = metrics(preds, refs, lang)
    for name, scorer in (scorers or {}).items():
        got = scorer(list(preds), [list(r) for r in refs], list(metas))
        clash = sorted(set(got) & set(out))
        if clash:
            raise ValueError(f"scorer {name!r} returned keys {clash} that another score already uses")
        out.update({k: float(v) for k, v in got.items()})
    return out
