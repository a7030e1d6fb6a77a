"""Watch a block sampler decode: per-row forward counts, finished tokens as soon as they are final,
and the current block with its still-masked positions.

:class:`ObservedDenoiser` wraps any :class:`~blockdistill.sampling.denoiser.Denoiser` and sees
every call the sampler makes through the protocol, so it needs no hook inside the block loop:

- a forward's first ``append`` query slots are clean tokens being written to the context (the
  previous block in the fused cache, the finished block in the ``block`` cache, every finished
  block in the ``none`` reference), so once a clean index is sent it is final;
- the remaining query slots are the block being denoised, mask tokens where still undecided;
- ``select_rows`` tells which rows left the batch (EOS or the token budget).

The last block of a row is never sent as clean (nothing follows it), so the caller hands the
sampler's final sequences to :meth:`ObservedDenoiser.finish`, which emits what was not emitted
yet and checks that everything emitted before is a prefix of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from blockdistill.layout.grid import response_block_start
from blockdistill.sampling.denoiser import Denoiser

__all__ = ["ObservedDenoiser", "StepView"]


@dataclass
class StepView:
    """One row at one forward of the sampler (what a live view shows)."""

    row: int
    """Input row."""
    final: list[int]
    """Generated tokens that are final so far (cut at the first EOS and at ``max_new_tokens``)."""
    draft: list[int]
    """The generated positions of the block being denoised, in order; the mask id where undecided."""
    forwards: int
    """Forwards this row has taken part in so far (prefill included)."""
    elapsed_s: float
    """Seconds since the prefill began."""
    done: bool = False
    """True for the last view of a row (sent by :meth:`ObservedDenoiser.finish`)."""


class ObservedDenoiser:
    """A :class:`Denoiser` that forwards every call to ``inner`` and watches it.

    Args:
        inner: the denoiser that does the work.
        max_new_tokens, eos_token_id: the sampler's cut rules, so tokens are emitted only when the
            sampler will return them (an id or several; ``eos_token_id`` None: no cut at EOS).
        on_tokens: ``on_tokens(row, tokens)`` with each row's newly final generated tokens, in order.
        on_step: ``on_step(StepView)`` for every active row at every forward, and once per row at the end.
        spec: the block rules the sampler should use (default ``inner.spec``), e.g. ``block_size=1,
            shift=True`` to decode AR through the block sampler.
    """

    def __init__(self, inner: Denoiser, *, max_new_tokens: int, eos_token_id: int | Sequence[int] | None,
                 on_tokens: Callable[[int, Tensor], None] | None = None,
                 on_step: Callable[[StepView], None] | None = None, spec: Any = None) -> None:
        self.inner = inner
        self.spec = spec if spec is not None else inner.spec
        if spec is not None:
            inner.spec = spec  # an HFDenoiser reads its own spec for the prefill layout and shift
        self.max_new = max_new_tokens
        self.eos = None if eos_token_id is None else (
            {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(i) for i in eos_token_id})
        self.on_tokens, self.on_step = on_tokens, on_step
        self.origin: Tensor | None = None
        self.prompt_lens: list[int] = []
        self.final: list[list[int]] = []
        self.closed: list[bool] = []
        self.forwards: list[int] = []
        self.t0 = time.perf_counter()

    @property
    def max_context(self) -> int | None:
        return self.inner.max_context

    def __getattr__(self, name: str) -> Any:  # device, new_cache, ... of the inner denoiser
        return getattr(self.inner, name)

    # ------------------------------------------------------------------ protocol
    def prefill(self, prompt_ids: Tensor, prompt_lens: Tensor, vision: Any = None):
        b, L = prompt_ids.shape[0], self.spec.block_size
        ran = int(response_block_start(prompt_lens, L).max()) > 0  # the sampler counts a prefill forward only then
        if self.origin is None:
            self.t0 = time.perf_counter()
            self.prompt_lens = [int(x) for x in prompt_lens.tolist()]
            self.final = [[] for _ in range(b)]
            self.closed = [False] * b
            self.forwards = [int(ran)] * b
        else:  # the `none` reference prefills every row again, then selects the active ones
            for r in self.origin.tolist():
                self.forwards[r] += 1
        self.origin = torch.arange(b)
        return self.inner.prefill(prompt_ids, prompt_lens, vision)

    def forward(self, state: Any, query_ids: Tensor, query_index: Tensor, append: int, logits_at: Tensor | None):
        rows = self.origin.tolist()
        ids, index = query_ids.tolist(), query_index.tolist()
        for a, r in enumerate(rows):
            self.forwards[r] += 1
            if append:
                self._commit(r, ids[a][:append], index[a][:append])
        if self.on_step is not None:
            p = self.prompt_lens
            for a, r in enumerate(rows):
                draft = [t for t, i in zip(ids[a][append:], index[a][append:]) if i >= p[r]]
                self.on_step(StepView(r, list(self.final[r]), draft, self.forwards[r],
                                      time.perf_counter() - self.t0))
        return self.inner.forward(state, query_ids, query_index, append, logits_at)

    def select_rows(self, state: Any, rows: Tensor) -> Any:
        self.origin = self.origin[rows.cpu()]
        return self.inner.select_rows(state, rows)

    # ------------------------------------------------------------------ emitting
    def _commit(self, r: int, ids: list[int], index: list[int]) -> None:
        """Clean tokens of row ``r`` at clean ``index``: append the generated ones not seen yet."""
        if self.closed[r]:
            return
        out = self.final[r]
        new = []
        for t, i in zip(ids, index):
            g = i - self.prompt_lens[r]  # generated position
            if g != len(out) + len(new):
                continue  # the prompt, or a block resent by the `none` reference
            new.append(t)
            if len(out) + len(new) >= self.max_new or (self.eos is not None and t in self.eos):
                self.closed[r] = True
                break
        if new:
            out.extend(new)
            if self.on_tokens is not None:
                self.on_tokens(r, torch.tensor(new, dtype=torch.long))

    def finish(self, sequences: list[Tensor]) -> None:
        """Emit the rest of each row from the sampler's output; raise if anything emitted differs."""
        for r, seq in enumerate(sequences):
            got = seq.tolist()
            done = self.final[r]
            if got[: len(done)] != done:
                raise RuntimeError(f"row {r}: streamed tokens {done} are not a prefix of the output {got}")
            rest = got[len(done):]
            if rest:
                done.extend(rest)
                if self.on_tokens is not None:
                    self.on_tokens(r, torch.tensor(rest, dtype=torch.long))
            self.closed[r] = True
            if self.on_step is not None:
                self.on_step(StepView(r, list(done), [], self.forwards[r], time.perf_counter() - self.t0, done=True))
