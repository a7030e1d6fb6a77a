"""Step-weight schedules: how much each position's divergence counts, from its commit step.

A schedule is any callable ``(commit_step, block_steps) -> raw weights`` on tensors of the same
shape (``commit_step = k(i) >= 1``; ``block_steps`` = steps its block took). Tokens committed
later carry more mean-field bias (DESIGN.md §4), so the default grows with ``k(i)``.
:func:`step_weights` applies a schedule and normalises the weights to mean 1 within each
block, so schedules change the balance *inside* a block, never the weight of a block.

Example::

    w = step_weights(proportional, batch.commit_step, batch.block_steps, batch.block_index, batch.kl_mask)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["SCHEDULES", "Schedule", "power", "proportional", "schedule_from_name", "step_weights", "uniform"]

Schedule = Callable[[Tensor, Tensor], Tensor]
"""``(commit_step (*S,) long, block_steps (*S,) long) -> (*S,) float`` non-negative raw weights."""


def uniform(commit_step: Tensor, block_steps: Tensor) -> Tensor:
    """Every position weighs the same."""
    return torch.ones_like(commit_step, dtype=torch.float)


def proportional(commit_step: Tensor, block_steps: Tensor) -> Tensor:
    """``w ∝ k(i)`` (the DCD default)."""
    return commit_step.float()


def power(exponent: float) -> Schedule:
    """``w ∝ k(i) ** exponent`` (``exponent=1`` is :func:`proportional`, 0 is :func:`uniform`)."""
    if exponent < 0:
        raise ValueError(f"power schedule exponent must be >= 0 (weights grow with the step), got {exponent}")

    def schedule(commit_step: Tensor, block_steps: Tensor) -> Tensor:
        return commit_step.float() ** exponent

    schedule.__name__ = f"power_{exponent:g}"
    return schedule


SCHEDULES: dict[str, Schedule] = {"uniform": uniform, "proportional": proportional}
"""Parameter-free schedules by config name; ``power`` takes an exponent (see :func:`schedule_from_name`)."""


def schedule_from_name(name: str, exponent: float = 2.0) -> Schedule:
    """``uniform``, ``proportional``, ``power`` (with ``exponent``) or ``"package.module:function"``
    naming any importable schedule callable."""
    if name in SCHEDULES:
        return SCHEDULES[name]
    if name == "power":
        return power(exponent)
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"schedule {name!r} could not be imported: {e}") from None
        if not callable(fn):
            raise ValueError(f"schedule {name!r} is not callable")
        return fn
    raise ValueError(f"schedule must be one of {sorted(SCHEDULES) + ['power']} or 'module:function', got {name!r}")


def step_weights(schedule: Schedule, commit_step: Tensor, block_steps: Tensor, block_index: Tensor,
                 mask: Tensor, normalize: bool = True) -> Tensor:
    """Per-position weights ``(B, G)``, zero outside ``mask``, mean 1 over ``mask`` in each block.

    Args:
        schedule: raw-weight callable.
        commit_step, block_steps, block_index: long ``(B, G)``.
        mask: bool ``(B, G)``: positions that get a weight (the KL positions).
        normalize: divide by each block's mean (a block whose raw weights are all 0 stays 0).
    """
    raw = schedule(commit_step, block_steps).float()
    if raw.shape != commit_step.shape:
        raise ValueError(f"schedule returned shape {tuple(raw.shape)} for commit steps {tuple(commit_step.shape)}")
    if bool((raw < 0).any()):
        raise ValueError("schedule returned negative weights")
    raw = torch.where(mask, raw, torch.zeros_like(raw))
    if not normalize:
        return raw
    b = raw.shape[0]
    local = block_index - block_index.min(1, keepdim=True).values
    nb = int(local.max()) + 1 if local.numel() else 1
    sums = torch.zeros(b, nb, device=raw.device).scatter_add(1, local, raw)
    counts = torch.zeros(b, nb, device=raw.device).scatter_add(1, local, mask.float())
    mean = (sums / counts.clamp(min=1)).gather(1, local)
    return torch.where(mean > 0, raw / mean.clamp(min=torch.finfo(mean.dtype).tiny), torch.zeros_like(raw))
