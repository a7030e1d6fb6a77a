"""Divergences against plain references, and the properties TRL's GKD tests check.

Guards against: a top-k target that silently drops the leftover mass (then k = V and the full
row disagree), JSD extremes swapped (forward/reverse), ``0 log 0`` turning into NaN, and a
loss normalisation that changes with batch padding.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from blockdistill.distill import TokenDists
from blockdistill.losses.distill import (
    bucket_log_probs,
    dcd_loss,
    eos_cross_entropy,
    forward_kl,
    generalized_jsd,
    reverse_kl,
)

V = 7


def _rand(seed: int, shape=(3, 4), sharp: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, V, generator=g) * sharp
    q = torch.softmax(torch.randn(*shape, V, generator=g) * sharp, -1)
    return logits, q


def _ref_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain ``sum a log(a/b)`` in float64 with 0 log 0 = 0."""
    a, b = a.double(), b.double()
    return torch.where(a > 0, a * (a.log() - b.log()), torch.zeros_like(a)).sum(-1)


seeds = st.integers(0, 10_000)


@given(seeds)
def test_forward_and_reverse_kl_match_reference(seed: int) -> None:
    logits, q = _rand(seed)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(forward_kl(logits, q).double(), _ref_kl(q, p), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reverse_kl(logits, q).double(), _ref_kl(p, q), atol=1e-5, rtol=1e-4)


@given(seeds, st.floats(0.05, 0.95))
def test_jsd_matches_reference(seed: int, beta: float) -> None:
    logits, q = _rand(seed)
    p = torch.softmax(logits, -1).double()
    m = beta * q.double() + (1 - beta) * p
    ref = beta * _ref_kl(q, m) + (1 - beta) * _ref_kl(p, m)
    torch.testing.assert_close(generalized_jsd(logits, q, beta).double(), ref, atol=1e-5, rtol=1e-4)


@given(seeds)
def test_divergence_of_a_distribution_with_itself_is_zero(seed: int) -> None:
    _, q = _rand(seed)
    logits = q.log()
    for fn in (forward_kl, reverse_kl, lambda a, b: generalized_jsd(a, b, 0.3)):
        assert fn(logits, q).abs().max() < 1e-5
    # Top-k targets too, including rows with exact zeros (one-hot).
    onehot = TokenDists.one_hot(q.argmax(-1), V)
    assert forward_kl(torch.where(torch.nn.functional.one_hot(q.argmax(-1), V).bool(), 0.0, -1e4), onehot).abs().max() < 1e-5


@given(seeds)
def test_jsd_extremes_follow_trls_convention(seed: int) -> None:
    """beta = 0 and 1 are defined (as in TRL's GKD), not limits: the mixture formula would give 0
    there. Checked against plain references, not against this module's own KL functions."""
    logits, q = _rand(seed)
    p = torch.softmax(logits, -1)
    log_p = torch.log_softmax(logits.double(), -1)
    # TRL: beta = 0 -> F.kl_div(student_log_probs, teacher_log_probs, log_target=True) = KL(q || p).
    trl0 = F.kl_div(log_p, q.double().log(), reduction="none", log_target=True).sum(-1)
    trl1 = F.kl_div(q.double().log(), log_p, reduction="none", log_target=True).sum(-1)
    torch.testing.assert_close(generalized_jsd(logits, q, 0.0).double(), trl0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(generalized_jsd(logits, q, 1.0).double(), trl1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(trl0, _ref_kl(q, p), atol=1e-5, rtol=1e-4)
    # Near the extremes the mixture formula itself tends to 0, which the convention is not.
    near = generalized_jsd(logits, q, 1e-4)
    assert bool((near < 1e-2 * generalized_jsd(logits, q, 0.0) + 1e-6).all())
    # Interior values are bounded by the JSD's ceiling, unlike KL.
    inner = generalized_jsd(logits, q, 0.5)
    assert bool((inner >= -1e-6).all()) and bool((inner <= math.log(2) + 1e-5).all())


@given(seeds)
def test_kl_decreases_toward_a_matching_student(seed: int) -> None:
    logits, q = _rand(seed)
    target = q.log()
    previous = None
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        kl = forward_kl((1 - alpha) * logits + alpha * target, q).sum()
        # Interpolating logits moves along a curve on which KL is convex and 0 at alpha = 1.
        if previous is not None:
            assert float(kl) <= float(previous) + 1e-5
        previous = kl
    assert float(previous) < 1e-5


def test_gradient_descent_reduces_kl_to_zero() -> None:
    logits, q = _rand(0)
    logits = logits.clone().requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=5.0)
    first = float(forward_kl(logits.detach(), q).sum())
    for _ in range(300):
        opt.zero_grad()
        forward_kl(logits, q).sum().backward()
        opt.step()
    assert float(forward_kl(logits.detach(), q).sum()) < 1e-3 * first


@given(seeds, st.sampled_from([forward_kl, reverse_kl, 0.3, 0.7]))
def test_topk_with_k_equal_v_equals_full_rows(seed: int, fn) -> None:
    logits, q = _rand(seed)
    div = fn if callable(fn) else (lambda a, b, beta=fn: generalized_jsd(a, b, beta))
    full = TokenDists.full(q)
    topk = full.to_topk(V)
    assert topk.is_topk and topk.k == V
    torch.testing.assert_close(div(logits, topk), div(logits, q), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(div(logits, full), div(logits, q))


def test_topk_gradients_are_finite_when_k_equals_v() -> None:
    """With k = V the 'rest' bucket is empty: its log-sum-exp must not produce NaN gradients."""
    logits, q = _rand(1)
    logits.requires_grad_(True)
    forward_kl(logits, TokenDists.full(q).to_topk(V)).sum().backward()
    assert torch.isfinite(logits.grad).all()


@given(seeds, st.integers(1, V - 1))
def test_topk_uses_leftover_as_one_bucket(seed: int, k: int) -> None:
    logits, q = _rand(seed)
    t = TokenDists.full(q).to_topk(k)
    log_p, qb, _ = bucket_log_probs(logits, t)
    assert log_p.shape[-1] == k + 1
    torch.testing.assert_close(qb.sum(-1), torch.ones(qb.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(qb.shape[:-1]), atol=1e-5, rtol=0)
    # Reference: collapse both full distributions onto the same buckets.
    p = torch.softmax(logits, -1)
    inside = torch.zeros_like(q, dtype=torch.bool).scatter(-1, t.indices, True)
    pb = torch.cat([p.gather(-1, t.indices), (p * ~inside).sum(-1, keepdim=True)], -1)
    qr = torch.cat([q.gather(-1, t.indices), (q * ~inside).sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(forward_kl(logits, t).double(), _ref_kl(qr, pb), atol=1e-5, rtol=1e-4)


def test_eos_cross_entropy() -> None:
    logits, _ = _rand(3)
    torch.testing.assert_close(eos_cross_entropy(logits, 2), -torch.log_softmax(logits, -1)[..., 2])


def test_dcd_loss_weights_masks_and_normalisation() -> None:
    logits, q = _rand(4, shape=(2, 5))
    kl_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    eos_mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    w = torch.rand(2, 5) + 0.5
    loss, stats = dcd_loss(logits, q, w, kl_mask, eos_mask, eos_token_id=3, lambda_eos=0.7)
    kl = forward_kl(logits, q)
    ce = eos_cross_entropy(logits, 3)
    ref = ((w * kl)[kl_mask].sum() + 0.7 * ce[eos_mask].sum()) / kl_mask.sum()
    torch.testing.assert_close(loss, ref)
    assert stats["kl"] == pytest.approx(float(kl[kl_mask].mean()), rel=1e-5)
    # Batch padding (masked-out positions holding garbage) never changes the loss.
    garbage = logits.clone()
    garbage[~(kl_mask | eos_mask)] = 1e4
    loss2, _ = dcd_loss(garbage, q, w, kl_mask, eos_mask, eos_token_id=3, lambda_eos=0.7)
    torch.testing.assert_close(loss, loss2)
    # lambda_eos = 0 removes the EOS term.
    loss0, _ = dcd_loss(logits, q, w, kl_mask, eos_mask, eos_token_id=3, lambda_eos=0.0)
    torch.testing.assert_close(loss0, (w * kl)[kl_mask].sum() / kl_mask.sum())


def test_divergence_from_name_is_the_one_config_lookup():
    """Guards against the CLI and the ECHO example mapping config names to different losses:
    each name computes the divergence it names (against the plain references above)."""
    from blockdistill.losses.distill import DIVERGENCES, divergence_from_name

    logits, q = _rand(5)
    p = torch.softmax(logits, -1)
    m = 0.3 * q.double() + 0.7 * p.double()
    refs = {"forward_kl": _ref_kl(q, p), "reverse_kl": _ref_kl(p, q),
            "jsd": 0.3 * _ref_kl(q, m) + 0.7 * _ref_kl(p, m)}
    assert set(DIVERGENCES) == set(refs)
    for name, ref in refs.items():
        got = divergence_from_name(name, 0.3)(logits, q).double()
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="divergence must be one of"):
        divergence_from_name("kl")
