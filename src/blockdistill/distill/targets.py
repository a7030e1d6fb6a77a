"""Joint-target builders: which teacher distribution each generated position is trained on.

All builders share :class:`TargetBuilder`: given a trajectory (a :class:`TrajectoryRecord` or
a :class:`DistillBatch`; both carry ``tokens``, ``target``, ``first_step`` and ``vocab_size``
-compatible fields) they return :class:`TokenDists` rows over the same leading shape.

- :class:`CommitStepTarget` (DCD, default): ``q_i`` at the step ``k(i)`` where i was committed.
  Along the commit order these are the chain-rule factors of the teacher's joint, so their
  product is the teacher's probability of the block it produced.
- :class:`HardTokenTarget`: one-hot committed tokens (sequence-level KD).
- :class:`FirstStepTarget`: the marginals at the block's first step (naive mean-field
  baseline; its argmax can be a block the teacher gives zero probability).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from blockdistill.losses.rows import TokenDists

__all__ = ["TARGETS", "CommitStepTarget", "FirstStepTarget", "HardTokenTarget", "TargetBuilder", "target_builder"]


class Trajectory(Protocol):
    """What a target builder reads (records and batches both provide it)."""

    tokens: Tensor
    target: TokenDists
    first_step: TokenDists | None


@runtime_checkable
class TargetBuilder(Protocol):
    """``(trajectory) -> TokenDists`` with the trajectory's leading shape (``(G,)`` or ``(B, G)``)."""

    def __call__(self, trajectory: Trajectory) -> TokenDists: ...


class CommitStepTarget:
    """DCD: the teacher's row at the commit step of each position."""

    def __call__(self, trajectory: Trajectory) -> TokenDists:
        return trajectory.target


class HardTokenTarget:
    """Sequence-level KD: a point mass on each committed token."""

    def __call__(self, trajectory: Trajectory) -> TokenDists:
        return TokenDists.one_hot(trajectory.tokens, trajectory.target.vocab_size).to(trajectory.tokens.device)


class FirstStepTarget:
    """Mean-field baseline: the teacher's row at the first step of each position's block."""

    def __call__(self, trajectory: Trajectory) -> TokenDists:
        if trajectory.first_step is None:
            raise ValueError("the first-step target needs first-step rows; collect with record_first_step=True")
        return trajectory.first_step


TARGETS: dict[str, type] = {"commit_step": CommitStepTarget, "hard": HardTokenTarget, "first_step": FirstStepTarget}
"""Builders by config name."""


def target_builder(name: str) -> TargetBuilder:
    """The builder registered as ``name`` (one of :data:`TARGETS`)."""
    if name not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {name!r}")
    return TARGETS[name]()
