"""Distillation divergences and the DCD loss (DESIGN.md §4).

Every divergence compares the student's logits with a teacher *target* given either as full
probability rows or as top-k rows (token ids, their probabilities and the leftover mass). A
top-k target is compared on ``k + 1`` buckets: the k listed tokens and one "everything else"
bucket, whose student probability is the student's mass outside the k ids. With ``k = V`` the
extra bucket is empty on both sides and the result equals the full-row divergence.

Conventions (as in TRL's GKD): ``forward_kl = KL(q || p)`` (teacher ``q``, student ``p``),
``reverse_kl = KL(p || q)``, and ``generalized_jsd(beta)`` interpolates with the mixture
``m = beta * q + (1 - beta) * p``; ``beta = 0`` and ``beta = 1`` are defined as forward and
reverse KL.

Example::

    kl = forward_kl(logits, target)              # (B, G)
    loss, stats = dcd_loss(logits, target, weights, kl_mask, eos_mask, eos_token_id=eos)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from blockdistill.losses.rows import TokenDists

__all__ = [
    "DIVERGENCES",
    "Target",
    "TokenDists",
    "bucket_log_probs",
    "dcd_loss",
    "divergence_from_name",
    "eos_cross_entropy",
    "forward_kl",
    "generalized_jsd",
    "reverse_kl",
]


Target = Tensor | TokenDists
"""Full rows ``(*S, V)`` of probabilities as a tensor, or :class:`~blockdistill.losses.rows.TokenDists`
(full or top-k) over leading shape ``S``."""


def _dense_probs(target: Target) -> Tensor | None:
    """The full rows of ``target``; None for top-k rows."""
    if isinstance(target, Tensor):
        return target
    if not isinstance(target, TokenDists):
        raise TypeError(f"a target is a tensor of full rows or TokenDists, got {type(target).__name__}")
    return target.probs


def bucket_log_probs(student_logits: Tensor, target: Target) -> tuple[Tensor, Tensor, Tensor]:
    """Student log-probabilities and teacher probabilities on common buckets.

    Args:
        student_logits: float ``(*S, V)``.
        target: full rows ``(*S, V)`` or :class:`~blockdistill.losses.rows.TokenDists` (full or top-k).
    Returns:
        ``(log_p, q, log_q)``, each ``(*S, M)`` with ``M = V`` (full) or ``k + 1`` (top-k, last
        bucket = everything else). ``log_q`` is ``-inf`` where ``q == 0``. Float32 at least.
    """
    logp = F.log_softmax(student_logits.float(), dim=-1)
    dense = _dense_probs(target)
    if dense is not None:
        if dense.shape != logp.shape:
            raise ValueError(f"full target rows have shape {tuple(dense.shape)} but student logits "
                             f"{tuple(logp.shape)}; vocabularies must match")
        q = dense.to(logp.dtype)
    else:
        idx = target.indices.long()
        if idx.shape[:-1] != logp.shape[:-1]:
            raise ValueError(f"top-k target has leading shape {tuple(idx.shape[:-1])} but student logits "
                             f"{tuple(logp.shape[:-1])}")
        lp_k = logp.gather(-1, idx)
        inside = torch.zeros_like(logp, dtype=torch.bool).scatter(-1, idx, True)
        # A finite floor instead of -inf keeps logsumexp's gradient finite when k = V.
        floor = torch.finfo(logp.dtype).min
        lp_rest = logp.masked_fill(inside, floor).logsumexp(-1, keepdim=True).clamp(min=floor)
        logp = torch.cat([lp_k, lp_rest], -1)
        # When the k ids cover the vocabulary the rest bucket is empty: its recorded leftover is
        # rounding noise and must not meet the student's log(0).
        rest = target.leftover.to(logp.dtype)[..., None].clamp(min=0)
        rest = torch.where(inside.all(-1, keepdim=True), torch.zeros_like(rest), rest)
        q = torch.cat([target.values.to(logp.dtype), rest], -1)
    log_q = torch.where(q > 0, q.clamp(min=torch.finfo(q.dtype).tiny).log(), torch.full_like(q, -math.inf))
    return logp, q, log_q


def _kl(a: Tensor, log_a: Tensor, log_b: Tensor) -> Tensor:
    """``sum a (log a - log b)`` over the last dim, with ``0 log 0 = 0``."""
    terms = torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a))
    return terms.sum(-1)


def forward_kl(student_logits: Tensor, target: Target) -> Tensor:
    """``KL(q || p)`` per position: float ``(*S,)``. Zero iff the student matches the target
    (on the target's buckets); mode-covering, the DCD default."""
    log_p, q, log_q = bucket_log_probs(student_logits, target)
    return _kl(q, log_q, log_p)


def reverse_kl(student_logits: Tensor, target: Target) -> Tensor:
    """``KL(p || q)`` per position: float ``(*S,)``. Infinite where the student puts mass on a
    bucket the target gives zero (e.g. hard one-hot targets); use with full-support targets."""
    log_p, _, log_q = bucket_log_probs(student_logits, target)
    return _kl(log_p.exp(), log_p, log_q)


def generalized_jsd(student_logits: Tensor, target: Target, beta: float = 0.5) -> Tensor:
    """Generalized Jensen-Shannon divergence per position: float ``(*S,)``.

    ``beta * KL(q || m) + (1 - beta) * KL(p || m)`` with ``m = beta * q + (1 - beta) * p``.
    As in TRL's GKD, ``beta = 0`` is :func:`forward_kl` and ``beta = 1`` is :func:`reverse_kl`.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, target)
    if beta == 1.0:
        return reverse_kl(student_logits, target)
    log_p, q, log_q = bucket_log_probs(student_logits, target)
    log_m = torch.logsumexp(torch.stack([log_q + math.log(beta), log_p + math.log1p(-beta)]), dim=0)
    return beta * _kl(q, log_q, log_m) + (1 - beta) * _kl(log_p.exp(), log_p, log_m)


def eos_cross_entropy(student_logits: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """``-log p(EOS)`` per position: float ``(*S,)`` from logits ``(*S, V)``. With several EOS ids
    the event is "any of them": ``-log sum_e p(e)`` (every one of them ends the sequence)."""
    log_p = F.log_softmax(student_logits.float(), dim=-1)
    if isinstance(eos_token_id, int):
        return -log_p[..., eos_token_id]
    return -torch.logsumexp(log_p[..., list(eos_token_id)], dim=-1)


Divergence = Callable[[Tensor, Target], Tensor]
"""``(student_logits (*S, V), target) -> (*S,)`` per-position divergence."""

DIVERGENCES: dict[str, Divergence] = {"forward_kl": forward_kl, "reverse_kl": reverse_kl,
                                      "jsd": generalized_jsd}
"""Divergences by config name (``jsd`` uses its default ``beta`` unless wrapped)."""


def divergence_from_name(name: str, jsd_beta: float = 0.5) -> Divergence:
    """The divergence a config names: ``forward_kl``, ``reverse_kl`` or ``jsd`` (with ``jsd_beta``)."""
    if name == "jsd":
        fn = functools.partial(generalized_jsd, beta=jsd_beta)
        fn.__name__ = f"generalized_jsd_beta{jsd_beta:g}"  # type: ignore[attr-defined]
        return fn
    if name not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {sorted(DIVERGENCES)}, got {name!r}")
    return DIVERGENCES[name]


def dcd_loss(student_logits: Tensor, target: Target, weights: Tensor, kl_mask: Tensor, eos_mask: Tensor, *,
             eos_token_id: int | Sequence[int], lambda_eos: float = 1.0,
             divergence: Divergence = forward_kl) -> tuple[Tensor, dict[str, float]]:
    """The DCD objective ``sum_i w_i D(q_i, p_i) + lambda_eos * sum_j CE_j(EOS)``, normalised.

    Normalisation: both sums are divided by the number of KL positions in the batch, so the
    loss is a per-token average (each response token counts once, whatever its example's
    length) and ``lambda_eos`` is the weight of one EOS-padding position relative to one
    response token. With weights of mean 1 per block the KL part is then a weighted mean.

    Args:
        student_logits: float ``(B, G, V)`` at the generated positions.
        target: teacher rows over ``(B, G)`` (full ``(B, G, V)`` or top-k).
        weights: float ``(B, G)`` step weights ``w_i`` (see :mod:`blockdistill.distill.schedules`).
        kl_mask: bool ``(B, G)``: positions in the divergence term.
        eos_mask: bool ``(B, G)``: EOS-padding positions in the EOS cross-entropy term.
        eos_token_id: the EOS id, or all of them (:attr:`BlockSpec.eos_token_ids`): the term is then
            ``-log`` of the probability of any of them, and ``eos_acc`` counts an argmax on any.
    Returns:
        ``(loss, stats)``: scalar loss; stats are floats for logging (``kl``, ``eos_ce``, ``eos_acc``).
    """
    div = divergence(student_logits, target)
    kl_mask = kl_mask.to(div.device)
    eos_mask = eos_mask.to(div.device)
    denom = kl_mask.sum().clamp(min=1)
    kl_sum = torch.where(kl_mask, weights.to(div.dtype) * div, torch.zeros_like(div)).sum()
    loss = kl_sum / denom
    stats: dict[str, float] = {}
    with torch.no_grad():
        stats["kl"] = float(torch.where(kl_mask, div, torch.zeros_like(div)).sum() / denom)
    if lambda_eos > 0 and bool(eos_mask.any()):
        ce = eos_cross_entropy(student_logits, eos_token_id)
        eos_sum = torch.where(eos_mask, ce, torch.zeros_like(ce)).sum()
        loss = loss + lambda_eos * eos_sum / denom
        with torch.no_grad():
            n_eos = eos_mask.sum().clamp(min=1)
            stats["eos_ce"] = float(eos_sum / n_eos)
            ids = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
                               device=student_logits.device)
            stats["eos_acc"] = float((torch.isin(student_logits.argmax(-1), ids) & eos_mask).sum() / n_eos)
    return loss, stats
