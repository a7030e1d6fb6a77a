"""What a denoising step proposes at each still-masked slot: the argmax (greedy) or a draw.

The block sampler asks a proposal rule for ``(token, confidence)`` at every slot of a forward,
then lets the unmasking policy (:mod:`blockdistill.sampling.policies`) choose which slots to
commit. Sampling is therefore one more rule for that one step, not a second decoding loop:

- :data:`GREEDY` is :func:`~blockdistill.sampling.policies.proposals` (argmax, its softmax
  probability as confidence): every sampler and the teacher relabelling use it.
- :class:`Sampled` draws each slot's token from ``softmax(logits / temperature)`` cut to the
  ``top_k`` largest logits, then to the smallest set whose probability reaches ``top_p`` (that
  order, as transformers' ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
  ``TopPLogitsWarper`` apply them); the confidence is the drawn token's probability under that
  cut distribution (as SDAR's sampler scores its draws). ``temperature`` 0 is :data:`GREEDY`
  itself, so it is exactly greedy.

Draws come from per-row generators: row ``b`` of the call draws one uniform per candidate slot
(its still-masked positions, in block order) from ``generators[b]`` and nothing at a step where it
has no candidate, and turns it into a token by inverting the row's own cumulative distribution.
Nothing a row draws depends on the other rows, so a batch with one generator per row decodes what
each row decodes alone with its generator. A single generator is shared, rows drawing in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from blockdistill.sampling.policies import proposals

__all__ = ["GREEDY", "Greedy", "Proposal", "Sampled", "filter_logits"]


@runtime_checkable
class Proposal(Protocol):
    """Propose a token (and its confidence) at every slot of a forward."""

    def __call__(self, logits: Tensor, mask_token_id: int, needs_confidence: bool, candidate: Tensor,
                 rows: Tensor) -> tuple[Tensor, Tensor | None]:
        """Args:
            logits: float ``(B, K, V)`` (may be changed in place).
            mask_token_id: never proposed.
            needs_confidence: whether the policy reads the confidence.
            candidate: bool ``(B, K)``: the slot is a still-masked position of the block.
            rows: long ``(B,)``: input row of each active row (which generator it draws from).
        Returns:
            long ``(B, K)`` tokens and float ``(B, K)`` confidences (or None when not needed).
        """
        ...


@dataclass(frozen=True)
class Greedy:
    """The argmax at every slot (ties: the lowest id)."""

    def __call__(self, logits: Tensor, mask_token_id: int, needs_confidence: bool, candidate: Tensor,
                 rows: Tensor) -> tuple[Tensor, Tensor | None]:
        return proposals(logits, mask_token_id, needs_confidence)


GREEDY = Greedy()
"""The default proposal rule of every sampler."""


def filter_logits(logits: Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """``logits / temperature`` with everything outside the ``top_k`` largest, then outside the
    nucleus of probability ``top_p``, set to -inf (transformers' warpers: tokens tied with the
    k-th logit stay; the most probable token always stays)."""
    out = logits / temperature
    if top_k is not None and top_k < out.shape[-1]:
        kth = out.topk(top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = out.sort(dim=-1, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum <= 1.0 - top_p
        drop[..., -1] = False  # keep at least the most probable token
        out = out.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return out


@dataclass(frozen=True)
class Sampled:
    """Draw each slot's token (see the module docstring)."""

    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    generators: Sequence[torch.Generator] | torch.Generator | None = None
    """One per input row (a batch then equals its rows alone), one shared, or None (torch's default)."""

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 to sample (0 is greedy: use GREEDY), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def _generator(self, row: int) -> torch.Generator | None:
        g = self.generators
        if g is None or isinstance(g, torch.Generator):
            return g
        if row >= len(g):
            raise ValueError(f"row {row} has no generator: {len(g)} given for the batch")
        return g[row]

    def uniforms(self, candidate: Tensor, rows: Tensor) -> Tensor:
        """Float ``(B, K)``: a fresh uniform at every candidate slot (0 elsewhere), row ``b`` drawing
        ``candidate[b].sum()`` numbers from its generator, in slot order."""
        u = torch.zeros(candidate.shape, dtype=torch.float64, device=candidate.device)
        counts = candidate.sum(1).tolist()
        for b, (row, n) in enumerate(zip(rows.tolist(), counts)):
            if n:
                g = self._generator(row)
                draw = torch.rand(n, generator=g, dtype=torch.float64, device=g.device if g is not None else "cpu")
                u[b, candidate[b]] = draw.to(candidate.device)
        return u

    def __call__(self, logits: Tensor, mask_token_id: int, needs_confidence: bool, candidate: Tensor,
                 rows: Tensor) -> tuple[Tensor, Tensor | None]:
        logits[..., mask_token_id] = float("-inf")
        probs = filter_logits(logits.float(), self.temperature, self.top_k, self.top_p).softmax(-1)
        cdf = probs.double().cumsum(-1)
        u = self.uniforms(candidate, rows)
        total = cdf[..., -1:]
        target = torch.minimum(u[..., None] * total, torch.nextafter(total, torch.zeros_like(total)))
        tok = torch.searchsorted(cdf, target, right=True)[..., 0].clamp(max=probs.shape[-1] - 1)
        conf = probs.gather(-1, tok[..., None])[..., 0] if needs_confidence else None
        return tok, conf
