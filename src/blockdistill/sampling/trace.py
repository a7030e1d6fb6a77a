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

from blockdistill.layout import block_id, tail_len

__all__ = ["BlockTrace", "ProbRows", "TraceRecorder", "TraceSpec"]


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
    ``block_id(prompt_len + t, block_size)``.
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
        return block_id(self.prompt_len + torch.arange(self.length, device=self.tokens.device), self.block_size)


class TraceRecorder:
    """Collects :class:`BlockTrace` rows inside a sampler; built only when recording is asked for.

    Per block: :meth:`begin_block`, one :meth:`observe` per denoising step, :meth:`end_block`;
    :meth:`select` when rows leave the batch.
    """

    def __init__(self, spec: TraceSpec, batch: int, block_size: int) -> None:
        self.spec, self.L = spec, block_size
        self.blocks: list[list[tuple[Tensor, ProbRows, ProbRows]]] = [[] for _ in range(batch)]
        self.rows: list[int] = list(range(batch))  # active row -> input row

    def begin_block(self, batch: int, device: torch.device) -> None:
        self.step = torch.zeros(batch, self.L, dtype=torch.long, device=device)
        self.commit: ProbRows | None = None
        self.first: ProbRows | None = None

    def observe(self, logits: Tensor, jpos: Tensor, cand: Tensor, commit: Tensor, step: int) -> None:
        """``logits`` float ``(B, K, V)`` (mask token at -inf) at block positions ``jpos``
        ``(B, K)``; ``cand``/``commit`` bool ``(B, K)``; ``step`` 1-based."""
        rows = ProbRows.from_probs(torch.softmax(logits, -1), self.spec.top_k)
        if self.commit is None:
            self.commit = _empty_rows(rows, self.L)
            self.first = _empty_rows(rows, self.L)
        if step == 1:
            _scatter_rows(self.first, rows, jpos, cand)
        _scatter_rows(self.commit, rows, jpos, commit)
        self.step.scatter_(1, jpos, torch.where(commit, step, self.step.gather(1, jpos)))

    def end_block(self) -> None:
        for a, r in enumerate(self.rows):
            self.blocks[r].append((self.step[a], self.commit[a], self.first[a]))

    def select(self, keep: list[int]) -> None:
        self.rows = [self.rows[a] for a in keep]

    def traces(self, prompt_lens: list[int], decoded: list[Tensor]) -> list[BlockTrace]:
        """``decoded[r]``: row ``r``'s decoded blocks, long, from clean index ``s_r``."""
        out = []
        for r, blocks in enumerate(self.blocks):
            tail = tail_len(prompt_lens[r], self.L)
            step = torch.cat([s for s, _, _ in blocks])[tail:]
            commit = ProbRows.cat([c for _, c, _ in blocks])[tail:]
            first = ProbRows.cat([f for _, _, f in blocks])[tail:]
            out.append(BlockTrace(prompt_lens[r], self.L, decoded[r][tail: tail + step.shape[0]].clone(), step,
                                  commit, first))
        return out


def _empty_rows(rows: ProbRows, L: int) -> ProbRows:
    b = rows.probs.shape[0]
    probs = rows.probs.new_zeros(b, L, rows.probs.shape[-1])
    if rows.is_full:
        return ProbRows(probs)
    return ProbRows(probs, rows.indices.new_zeros(b, L, rows.indices.shape[-1]), rows.rest.new_zeros(b, L))


def _scatter_rows(dst: ProbRows, src: ProbRows, jpos: Tensor, where: Tensor) -> None:
    """``dst[b, jpos[b, k]] = src[b, k]`` where ``where[b, k]``."""
    def put(d: Tensor, s: Tensor) -> None:
        extra = d.dim() - 2
        idx = jpos.view(*jpos.shape, *([1] * extra)).expand(*jpos.shape, *d.shape[2:])
        keep = where.view(*where.shape, *([1] * extra))
        d.scatter_(1, idx, torch.where(keep, s, d.gather(1, idx)))

    put(dst.probs, src.probs)
    if not dst.is_full:
        put(dst.indices, src.indices)
        put(dst.rest, src.rest)
