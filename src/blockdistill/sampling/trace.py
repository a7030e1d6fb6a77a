"""Decoding trajectories recorded for DCD (DESIGN.md §4): per generated position, the step at
which it was committed, the token, and the teacher's distribution at that step and at the
block's first step (the naive mean-field target). Rows are stored in full or as top-k.

Recording is opt-in (``block_generate(..., record=TraceSpec(...))``); when off, the sampler
never computes the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BlockTrace", "ProbRows", "TraceSpec"]


@dataclass(frozen=True)
class TraceSpec:
    """What to record."""

    top_k: int | None = None
    """Keep the ``top_k`` most probable tokens of each row (indices, probs, leftover mass);
    None keeps full vocabulary rows."""

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (full rows), got {self.top_k}")


@dataclass
class ProbRows:
    """Probability rows of ``N`` positions, full or top-k.

    Full: ``indices`` and ``rest`` are None and ``probs`` is float ``(N, V)``.
    Top-k: ``indices`` long ``(N, k)``, ``probs`` float ``(N, k)`` (descending) and ``rest``
    float ``(N,)`` = the probability mass outside the top k.
    """

    probs: Tensor
    indices: Tensor | None = None
    rest: Tensor | None = None

    @property
    def is_full(self) -> bool:
        return self.indices is None

    def to_dense(self, vocab_size: int) -> Tensor:
        """Float ``(N, V)``. Top-k rows spread their leftover mass uniformly over the other
        ``V - k`` tokens, so each row still sums to 1."""
        if self.is_full:
            return self.probs
        n, k = self.probs.shape
        fill = (self.rest / max(vocab_size - k, 1))[:, None]
        out = fill.expand(n, vocab_size).clone()
        return out.scatter_(1, self.indices, self.probs)

    def __getitem__(self, rows: slice | Tensor) -> ProbRows:
        if self.is_full:
            return ProbRows(self.probs[rows])
        return ProbRows(self.probs[rows], self.indices[rows], self.rest[rows])

    @staticmethod
    def from_probs(probs: Tensor, top_k: int | None) -> ProbRows:
        """``probs`` float ``(..., V)`` -> rows in the requested storage (leading dims kept)."""
        if top_k is None:
            return ProbRows(probs)
        vals, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return ProbRows(vals, idx, (1.0 - vals.sum(-1)).clamp(min=0.0))

    @staticmethod
    def cat(parts: list[ProbRows], dim: int = 0) -> ProbRows:
        if parts[0].is_full:
            return ProbRows(torch.cat([p.probs for p in parts], dim))
        return ProbRows(torch.cat([p.probs for p in parts], dim), torch.cat([p.indices for p in parts], dim),
                        torch.cat([p.rest for p in parts], dim))


@dataclass
class BlockTrace:
    """The teacher's trajectory for one sequence.

    Covers every generated position of every decoded block: clean indices
    ``prompt_len .. prompt_len + N - 1``, i.e. from the first response token to the end of the
    last decoded block (positions after EOS inside that block included; the returned
    ``sequences`` are truncated, the trace is not). Position ``t`` sits in block
    ``(prompt_len + t) // block_size``.
    """

    prompt_len: int
    block_size: int
    tokens: Tensor
    """Long ``(N,)``: committed tokens."""
    step: Tensor
    """Long ``(N,)``: ``k(i)``, the 1-based denoising step of its block at which it was committed."""
    commit: ProbRows
    """The teacher's rows at the commit step, ``q_i`` (conditioned on the context and the
    tokens of the block committed before step ``k(i)``)."""
    first: ProbRows
    """The rows at the block's first step (all of the block masked): the mean-field target."""

    @property
    def length(self) -> int:
        return int(self.tokens.shape[0])

    def block_ids(self) -> Tensor:
        """Long ``(N,)`` block of each position."""
        return (self.prompt_len + torch.arange(self.length, device=self.tokens.device)) // self.block_size
