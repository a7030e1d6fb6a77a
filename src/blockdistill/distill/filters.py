"""Filters for degenerate teacher trajectories (repetition loops, runaway generations).

A filter is any callable ``(record) -> reason | None``; a non-None reason drops the record
and is counted under that name in the collection manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from blockdistill.distill.records import TrajectoryRecord

__all__ = ["RepetitionFilter", "TrajectoryFilter", "UnfinishedFilter", "combine_filters", "find_repetition"]

TrajectoryFilter = Callable[[TrajectoryRecord], "str | None"]
"""``(record) -> None`` to keep it, or a short reason string to drop it."""


def find_repetition(tokens: Sequence[int], max_ngram: int, repeats: int) -> tuple[int, int] | None:
    """First ``(start, n)`` such that the ``n``-gram at ``start`` occurs ``repeats`` times in a row
    (``n`` in ``1..max_ngram``), or None. ``"a b a b a b"`` has ``(0, 2)`` with ``repeats=3``."""
    toks = list(tokens)
    for n in range(1, max_ngram + 1):
        span = n * repeats
        for start in range(len(toks) - span + 1):
            unit = toks[start: start + n]
            if all(toks[start + j * n: start + (j + 1) * n] == unit for j in range(1, repeats)):
                return start, n
    return None


class RepetitionFilter:
    """Drops responses containing an n-gram (``n <= max_ngram``) repeated ``repeats`` times in a row.

    Only the response (tokens before the first EOS) is checked; EOS padding is not a loop.
    """

    def __init__(self, max_ngram: int = 4, repeats: int = 4) -> None:
        if max_ngram < 1 or repeats < 2:
            raise ValueError(f"need max_ngram >= 1 and repeats >= 2, got {max_ngram} and {repeats}")
        self.max_ngram, self.repeats = max_ngram, repeats

    def __call__(self, record: TrajectoryRecord) -> str | None:
        hit = find_repetition(record.response.tolist(), self.max_ngram, self.repeats)
        return None if hit is None else "repetition"


class UnfinishedFilter:
    """Drops trajectories that ran out of budget before emitting EOS."""

    def __call__(self, record: TrajectoryRecord) -> str | None:
        return None if record.finished else "unfinished"


def combine_filters(filters: Sequence[TrajectoryFilter]) -> TrajectoryFilter:
    """The first reason any of ``filters`` gives."""
    def combined(record: TrajectoryRecord) -> str | None:
        for f in filters:
            reason = f(record)
            if reason is not None:
                return reason
        return None
    return combined
