"""Unmasking policies: which still-masked positions of a block to commit at a denoising step.

A policy is any callable with the :class:`UnmaskPolicy` shape. The sampler computes the argmax
token of every candidate (the mask token excluded) and, when the policy asks for it, its
confidence (top softmax probability); the policy only decides *which* candidates to commit.

Invariant every policy keeps: it commits only candidates, and at least one candidate of every
row that still has one, so a block always finishes in at most ``L`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["POLICIES", "ConfidenceThreshold", "FixedCount", "OneStep", "UnmaskPolicy", "policy_from_name", "proposals"]


def proposals(logits: Tensor, mask_token_id: int, needs_confidence: bool) -> tuple[Tensor, Tensor | None]:
    """What a denoising step proposes at each slot: ``(argmax token, its top probability or None)``
    from float ``(..., V)`` logits, the mask token excluded (its logit is set to -inf in place).
    Ties go to the first maximum. Every sampler, and the teacher relabelling that must reproduce
    them, reads its logits through this one rule."""
    logits[..., mask_token_id] = float("-inf")
    top, tok = logits.max(-1)  # first maximum on ties, like argmax (and faster on CPU)
    conf = torch.exp(top - torch.logsumexp(logits, -1)) if needs_confidence else None
    return tok, conf


@runtime_checkable
class UnmaskPolicy(Protocol):
    """Choose the positions to commit.

    Attributes:
        needs_confidence: whether ``confidence`` must be computed (a softmax over the vocabulary).
        commits_all: True when every candidate is committed at the first step (one step per
            block); lets the sampler skip the end-of-block check.
    """

    needs_confidence: bool
    commits_all: bool

    def __call__(self, confidence: Tensor | None, candidate: Tensor, step: int) -> Tensor:
        """Args:
            confidence: float ``(B, K)`` top probability of each slot's argmax (None when
                ``needs_confidence`` is False); values on non-candidates are meaningless.
            candidate: bool ``(B, K)``: slot is a still-masked position of the current block.
            step: 1-based denoising step within the block.
        Returns:
            bool ``(B, K)`` positions to commit, a subset of ``candidate``.
        """
        ...


def _most_confident(confidence: Tensor, candidate: Tensor, count: Tensor | int) -> Tensor:
    """The ``count`` most confident candidates of each row (ties: lower slot first)."""
    score = confidence.masked_fill(~candidate, float("-inf"))
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    count = torch.as_tensor(count, device=rank.device)
    return candidate & (rank < (count[:, None] if count.dim() else count))


@dataclass(frozen=True)
class ConfidenceThreshold:
    """Commit every candidate whose confidence is strictly greater than ``tau``; if none
    passes, commit the single most confident one (the multi-step teacher, DESIGN.md §3)."""

    tau: float = 0.85
    needs_confidence: bool = True
    commits_all: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")

    def __call__(self, confidence: Tensor | None, candidate: Tensor, step: int) -> Tensor:
        passed = candidate & (confidence > self.tau)
        fallback = _most_confident(confidence, candidate, 1)
        return torch.where(passed.any(1, keepdim=True), passed, fallback)


@dataclass(frozen=True)
class FixedCount:
    """Commit the ``count`` most confident candidates per step (all of them when fewer remain)."""

    count: int = 1
    needs_confidence: bool = True
    commits_all: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")

    def __call__(self, confidence: Tensor | None, candidate: Tensor, step: int) -> Tensor:
        return _most_confident(confidence, candidate, self.count)


@dataclass(frozen=True)
class OneStep:
    """Commit every masked position at its argmax in one forward (the distilled student)."""

    needs_confidence: bool = False
    commits_all: bool = True

    def __call__(self, confidence: Tensor | None, candidate: Tensor, step: int) -> Tensor:
        return candidate


POLICIES: dict[str, Callable[..., UnmaskPolicy]] = {"threshold": ConfidenceThreshold, "fixed": FixedCount,
                                                    "one_step": OneStep}
"""Unmasking policies by name (a class or factory taking the policy's parameters). A new policy is
one more entry; :func:`policy_from_name` and the configs validate against this dict."""


def policy_from_name(name: str, **kwargs: float) -> UnmaskPolicy:
    """The policy registered as ``name`` in :data:`POLICIES`, built with ``kwargs``: ``"threshold"``
    (``tau``), ``"fixed"`` (``count``), ``"one_step"`` or one registered later."""
    if name not in POLICIES:
        raise ValueError(f"unknown unmasking policy {name!r}; expected one of {tuple(POLICIES)}")
    return POLICIES[name](**kwargs)
