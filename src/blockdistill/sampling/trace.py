"""Decoding trajectories recorded for DCD (DESIGN.md §4): per generated position, the step at
which it was committed, the token, and the teacher's distribution at that step and at the
block's first step (the naive mean-field target). Rows are
:class:`~blockdistill.losses.rows.TokenDists`, full or top-k, the type the records, targets and
losses use.

Recording is opt-in (``block_generate(..., record=TraceSpec(...))``); when off, the sampler
never computes the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from blockdistill.layout import block_id, tail_len
from blockdistill.losses.rows import TokenDists

__all__ = ["BlockTrace", "TraceRecorder", "TraceSpec"]


@dataclass(frozen=True)
class TraceSpec:
    """What to record."""

    top_k: int | None = None
    """Keep the ``top_k`` most probable tokens of each row (indices, values, leftover mass;
    among tied probabilities the lowest ids); None keeps full vocabulary rows."""

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (full rows), got {self.top_k}")


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
    commit: TokenDists
    """The teacher's rows at the commit step, ``q_i`` (conditioned on the context and the
    tokens of the block committed before step ``k(i)``)."""
    first: TokenDists
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
        self.blocks: list[list[tuple[Tensor, TokenDists, TokenDists]]] = [[] for _ in range(batch)]
        self.rows: list[int] = list(range(batch))  # active row -> input row

    def begin_block(self, batch: int, device: torch.device) -> None:
        self.step = torch.zeros(batch, self.L, dtype=torch.long, device=device)
        self.commit: TokenDists | None = None
        self.first: TokenDists | None = None

    def observe(self, logits: Tensor, jpos: Tensor, cand: Tensor, commit: Tensor, step: int) -> None:
        """``logits`` float ``(B, K, V)`` (mask token at -inf) at block positions ``jpos``
        ``(B, K)``; ``cand``/``commit`` bool ``(B, K)``; ``step`` 1-based."""
        rows = TokenDists.from_probs(torch.softmax(logits, -1), self.spec.top_k)
        if self.commit is None:  # not yet written: point masses, cut off or overwritten later
            self.commit = self.first = TokenDists.point_masses((rows.shape[0], self.L), rows)
        if step == 1:
            self.first = self.first.scatter(jpos, rows, cand)
        self.commit = self.commit.scatter(jpos, rows, commit)
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
            commit = TokenDists.cat([c for _, c, _ in blocks])[tail:]
            first = TokenDists.cat([f for _, _, f in blocks])[tail:]
            out.append(BlockTrace(prompt_lens[r], self.L, decoded[r][tail: tail + step.shape[0]].clone(), step,
                                  commit, first))
        return out

