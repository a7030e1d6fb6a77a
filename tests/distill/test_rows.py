"""One row type (``TokenDists``): its answer to "which token is most likely" does not depend on
how the rows are stored.

Guards against: a top-k cut that keeps an arbitrary one of several tied entries (so a top-k row
names another argmax than the full row it came from), a top-k argmax that depends on the order
the entries are stored in, and any disagreement with the token the samplers commit (the lowest
id among the largest probabilities, :func:`blockdistill.sampling.policies.proposals`).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from blockdistill.losses import TokenDists, top_k_rows
from blockdistill.losses.distill import bucket_log_probs, forward_kl
from blockdistill.sampling.policies import proposals


def _brute_top_k(row: list[float], k: int) -> list[int]:
    """The k ids of largest probability, equal ones by increasing id (a sort, nothing clever)."""
    return sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]


@st.composite
def tied_rows(draw):
    """``(probs (N, V), k, permutation seed)``: small integer weights, so equal weights give exactly
    equal probabilities and most rows hold ties, at the top and at the k-th entry."""
    v = draw(st.integers(2, 10))
    n = draw(st.integers(1, 4))
    weights = draw(st.lists(st.lists(st.integers(0, 3), min_size=v, max_size=v).filter(any), min_size=n, max_size=n))
    k = draw(st.integers(1, v))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    w = torch.tensor(weights, dtype=dtype)
    return w / w.sum(-1, keepdim=True), k, draw(st.integers(0, 2**16))


@given(tied_rows())
@example((torch.tensor([[0.1, 0.3, 0.3, 0.3]]), 2, 0))  # the cut goes through a three-way tie
@example((torch.tensor([[0.25, 0.25, 0.25, 0.25]]), 1, 1))  # all tied, keep one
@example((torch.tensor([[0.0, 0.4, 0.2, 0.4]]), 1, 2))  # top tie, the higher id first in no order
def test_argmax_does_not_depend_on_storage(case) -> None:
    probs, k, seed = case
    full = TokenDists.full(probs)
    rows = probs.tolist()
    lowest_max = torch.tensor([min(i for i, p in enumerate(r) if p == max(r)) for r in rows])

    # The samplers' rule on the logits these rows are the softmax of (an extra mask column that
    # proposals excludes; log keeps exact ties exact).
    logits = torch.cat([probs.log(), torch.full((probs.shape[0], 1), 5.0, dtype=probs.dtype)], -1)
    committed, _ = proposals(logits, mask_token_id=probs.shape[1], needs_confidence=False)
    assert torch.equal(committed, lowest_max)

    top = full.to_topk(k)
    assert top.indices.tolist() == [_brute_top_k(r, k) for r in rows]
    assert torch.equal(top.values, probs.gather(-1, top.indices))
    torch.testing.assert_close(top.leftover, (1 - top.values.sum(-1)).clamp(min=0))

    # The stored order of top-k entries carries no meaning: shuffle it.
    g = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(k, generator=g) for _ in rows])
    shuffled = TokenDists(full.vocab_size, indices=top.indices.gather(-1, perm), values=top.values.gather(-1, perm),
                          leftover=top.leftover)
    # On disk (int32 ids) and back.
    stored = TokenDists.from_tensors(shuffled.tensors("t"), "t", full.vocab_size)
    for form in (full, top, shuffled, stored):
        assert torch.equal(form.argmax(), lowest_max), form

    # Cutting top-k rows further (from any stored order) keeps the lowest ids among ties too.
    k2 = max(1, k - 1)
    again = shuffled.to_topk(k2)
    assert again.indices.tolist() == [_brute_top_k(r, k2) for r in rows]
    assert torch.equal(again.argmax(), lowest_max)
    torch.testing.assert_close(again.leftover, (1 - again.values.sum(-1)).clamp(min=0))


def test_top_k_rows_with_ids_against_sorting() -> None:
    """Entries given with their own ids (not their columns): kept by value, ties to the lowest id."""
    values = torch.tensor([[0.2, 0.3, 0.2, 0.3], [0.5, 0.1, 0.1, 0.1]])
    ids = torch.tensor([[7, 9, 2, 4], [3, 8, 1, 6]])
    vals, idx = top_k_rows(values, 3, ids)
    assert idx.tolist() == [[4, 9, 2], [3, 1, 6]]
    assert torch.equal(vals, torch.tensor([[0.3, 0.3, 0.2], [0.5, 0.1, 0.1]]))


@pytest.mark.parametrize("topk", [False, True])
def test_where_and_scatter_against_loops(topk: bool) -> None:
    """Row-wise select and scatter: each output row is the row a plain loop picks."""
    torch.manual_seed(0)
    a = TokenDists.full(torch.softmax(torch.randn(2, 5, 6), -1))
    b = TokenDists.full(torch.softmax(torch.randn(2, 5, 6), -1))
    src = TokenDists.full(torch.softmax(torch.randn(2, 3, 6), -1))
    if topk:
        a, b, src = a.to_topk(3), b.to_topk(3), src.to_topk(3)
    cond = torch.tensor([[True, False, True, False, False], [False, True, True, False, True]])
    index = torch.tensor([[4, 0, 2], [1, 3, 0]])
    where = torch.tensor([[True, True, False], [False, True, True]])
    picked, put = a.where(cond, b), a.scatter(index, src, where)
    for i in range(2):
        for j in range(5):
            want = a if cond[i, j] else b
            for x, y in zip(picked._fields(), want._fields()):
                assert torch.equal(x[i, j], y[i, j])
            hit = [c for c in range(3) if where[i, c] and index[i, c] == j]
            for x, y, z in zip(put._fields(), a._fields(), src._fields()):
                assert torch.equal(x[i, j], z[i, hit[0]] if hit else y[i, j])
    with pytest.raises(ValueError, match="different forms"):
        a.where(cond, b.to_topk(2) if not topk else TokenDists.full(torch.ones(2, 5, 6) / 6))


def test_point_masses_are_valid_rows_of_the_same_form() -> None:
    like = TokenDists.full(torch.softmax(torch.randn(2, 7), -1)).to_topk(4)
    for token in (0, 3, 6):
        pm = TokenDists.point_masses((3, 2), like, token)
        assert pm.shape == (3, 2) and pm.k == 4
        assert (pm.argmax() == token).all() and (pm.prob_of(torch.full((3, 2), token)) == 1).all()
        assert all(len(set(r)) == 4 for r in pm.indices.reshape(-1, 4).tolist())  # ids distinct
    dense = TokenDists.point_masses((2,), TokenDists.full(torch.ones(1, 5) / 5), 2)
    assert dense.probs.tolist() == [[0, 0, 1, 0, 0]] * 2


def test_the_loss_takes_the_row_type_and_nothing_else() -> None:
    """The loss reads TokenDists (full or top-k) or a tensor of full rows; anything else is refused
    instead of being duck-typed."""
    torch.manual_seed(1)
    logits = torch.randn(3, 6)
    q = torch.softmax(torch.randn(3, 6), -1)
    kl = forward_kl(logits, q)
    torch.testing.assert_close(forward_kl(logits, TokenDists.full(q)), kl)
    torch.testing.assert_close(forward_kl(logits, TokenDists.full(q).to_topk(6)), kl)
    ref = (q * (q.log() - torch.log_softmax(logits, -1))).sum(-1)
    torch.testing.assert_close(kl, ref)

    class LooksLikeRows:
        probs = q

    with pytest.raises(TypeError, match="TokenDists"):
        bucket_log_probs(logits, LooksLikeRows())
