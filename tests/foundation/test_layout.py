"""Every mask of the layout module equals a brute-force definition written straight from
DESIGN.md §2. Guards against the most common silent bug in block diffusion: training, distillation
and decoding disagreeing on who may attend to whom."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from blockdistill.layout import (
    additive_mask,
    block_id,
    block_indices,
    block_span,
    clean_layout,
    clean_length,
    decode_end,
    dense_mask,
    full_dup_layout,
    generated_through,
    mask_mod,
    num_blocks,
    on_block_boundary,
    rad_layout,
    readout_column,
    response_block_start,
    tail_len,
)


@st.composite
def batches(draw):
    """Random (P, R, L) per row, including P % L != 0, R < L, L = 1 and batch padding."""
    size = draw(st.sampled_from([1, 2, 3, 4, 8]))
    b = draw(st.integers(1, 3))
    p = torch.tensor(draw(st.lists(st.integers(1, 13), min_size=b, max_size=b)))
    r = torch.tensor(draw(st.lists(st.integers(1, 11), min_size=b, max_size=b)))
    return p, r, size


def brute_sequence(p: int, n: int, size: int, kind: str):
    """Slots of one row as (clean index, is_noisy) from DESIGN.md §2, no tensor tricks."""
    s = (p // size) * size
    slots = [(i, False) for i in range(n)]
    if kind == "rad":
        slots += [(i, True) for i in range(s, n)]
    elif kind == "full_dup":
        slots += [(i, True) for i in range(n)]
    return slots


def brute_allowed(q, k, size):
    (i, qn), (j, kn) = q, k
    bi, bj = i // size, j // size
    if not qn:
        return (not kn) and bj <= bi
    if not kn:
        return bj < bi
    return bj == bi


def check(layout, p, r, size, kind):
    n = clean_length(p, r, size)
    mask = dense_mask(layout)[:, 0]
    width = layout.clean_width
    for b in range(len(p)):
        slots = brute_sequence(int(p[b]), int(n[b]), size, kind)
        phys = list(range(int(n[b])))
        if kind != "clean":
            phys += [width + t for t in range(len(slots) - int(n[b]))]
        valid = torch.zeros(layout.num_slots, dtype=torch.bool)
        valid[phys] = True
        assert torch.equal(layout.valid[b], valid)
        for qa, q in zip(phys, slots):
            assert int(layout.clean_index[b, qa]) == q[0]
            assert bool(layout.noisy[b, qa]) == q[1]
            for ka, k in zip(phys, slots):
                assert bool(mask[b, qa, ka]) == brute_allowed(q, k, size), (b, q, k)
            # batch padding is never attended to
            assert not mask[b, qa][~valid].any()
        # padding queries see only themselves (no empty softmax rows)
        for t in torch.nonzero(~valid).flatten().tolist():
            assert mask[b, t].sum() == 1 and mask[b, t, t]


@given(batches())
def test_clean_block_causal_mask_matches_brute_force(case):
    p, r, size = case
    n = clean_length(p, r, size)
    check(clean_layout(n, size), p, r, size, "clean")


@given(batches())
def test_rad_mask_matches_brute_force(case):
    p, r, size = case
    n = clean_length(p, r, size)
    lay = rad_layout(p, n, size)
    check(lay, p, r, size, "rad")
    # RAD feeds n + (n - s) tokens per row, full duplication 2n.
    s = response_block_start(p, size)
    assert torch.equal(lay.valid.sum(1), n + n - s)


@given(batches())
def test_full_dup_mask_matches_brute_force(case):
    p, r, size = case
    n = clean_length(p, r, size)
    check(full_dup_layout(n, size), p, r, size, "full_dup")


@given(batches())
def test_additive_and_flex_views_agree_with_dense(case):
    p, r, size = case
    n = clean_length(p, r, size)
    lay = rad_layout(p, n, size)
    dense = dense_mask(lay)
    add = additive_mask(dense, torch.float32)
    assert torch.equal(add == 0, dense)
    assert (add[~dense] == torch.finfo(torch.float32).min).all()
    mod = mask_mod(lay)
    b, t = lay.clean_index.shape
    bb, qq, kk = torch.meshgrid(torch.arange(b), torch.arange(t), torch.arange(t), indexing="ij")
    assert torch.equal(mod(bb, torch.zeros_like(bb), qq, kk), dense[:, 0])


@given(batches())
def test_query_suffix_mask_is_a_slice_of_the_full_mask(case):
    """Decoding runs only the last Q slots as queries over a KV cache; the rule must not change."""
    p, r, size = case
    n = clean_length(p, r, size)
    lay = rad_layout(p, n, size)
    q = max(1, lay.num_slots // 3)
    assert torch.equal(dense_mask(lay, q), dense_mask(lay)[:, :, -q:])


@given(batches(), st.booleans())
def test_positions_reuse_twin_positions(case, mrope):
    p, r, size = case
    n = clean_length(p, r, size)
    lay = rad_layout(p, n, size)
    width = lay.clean_width
    base = torch.arange(width)[None].expand(len(p), -1) * 7 + 3
    clean_pos = torch.stack([base, base + 1, base + 2]) if mrope else base
    pos = lay.positions(clean_pos)
    for b in range(len(p)):
        for t in range(lay.num_slots):
            if lay.valid[b, t]:
                i = int(lay.clean_index[b, t])
                assert torch.equal(pos[..., b, t], clean_pos[..., b, i])


def test_prediction_slot_with_shift_uses_previous_clean_token_at_block_start():
    p, n, size = torch.tensor([5]), torch.tensor([12]), 4
    lay = rad_layout(p, n, size)  # s = 4; noisy slots 12.. stand for clean 4..11
    targets = torch.tensor([[5, 8, 9]])
    assert lay.prediction_slot(targets, shift=False).tolist() == [[13, 16, 17]]
    # 5 <- noisy twin of 4 (same block); 8 <- clean 7 (previous block); 9 <- noisy twin of 8
    assert lay.prediction_slot(targets, shift=True).tolist() == [[12, 7, 16]]


def test_block_helpers_known_values():
    assert response_block_start(9, 4) == 8
    assert clean_length(9, 3, 4) == 16  # 9 + 3 + EOS = 13 -> 16
    assert clean_length(5, 2, 4) == 8  # exactly one EOS fits at index 7
    assert clean_length(4, 4, 4) == 12  # response fills the block: a whole EOS block follows


@given(p=st.integers(1, 40), m=st.integers(1, 40), L=st.sampled_from([1, 2, 3, 4, 8]))
def test_grid_spans_counts_and_ends_match_enumeration(p, m, L):
    """Each grid helper against a definition by enumerating clean indices one by one."""
    s = min(i for i in range(p + 1) if i // L == p // L)  # first index of the block holding index p
    assert response_block_start(p, L) == s and tail_len(p, L) == p - s
    # the blocks a decode of m tokens touches: every block holding one of p .. p+m-1
    touched = sorted({i // L for i in range(p, p + m)})
    assert num_blocks(tail_len(p, L) + m, L) == len(touched)
    assert decode_end(p, m, L) == (touched[-1] + 1) * L
    for k in range(len(touched)):
        lo, hi = block_span(s, k, L)
        assert [block_id(i, L) for i in range(lo, hi)] == [touched[k]] * L
        assert generated_through(k, p - s, L) == sum(1 for i in range(p, hi))
    assert on_block_boundary(p, L) == (p == response_block_start(p, L))
    assert num_blocks(0, L) == 0


def test_grid_tensor_helpers():
    start = torch.tensor([0, 4, 8])
    assert block_indices(start, 1, 4).tolist() == [[4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert block_indices(start[:1], 0, 2, count=3).tolist() == [list(range(6))]
    assert decode_end(torch.tensor([5, 8]), 4, 4).tolist() == [12, 12]
    assert on_block_boundary(torch.tensor([4, 5]), 4).tolist() == [True, False]
    assert generated_through(0, torch.tensor([1, 3]), 4).tolist() == [3, 1]


@given(p=st.integers(1, 12), n_extra=st.integers(1, 3), L=st.sampled_from([1, 2, 4]))
def test_readout_column_is_the_prediction_slot_of_a_rad_layout(p, n_extra, L):
    """The sampler's query ``[previous block (clean) | block (noisy)]`` read at
    ``readout_column`` names the same clean index as ``SlotLayout.prediction_slot`` in the
    training layout (shift: slot i-1 predicts i; no shift: the noisy twin)."""
    s = response_block_start(p, L)
    if s == 0:
        s, p = L, p + L  # a previous block must exist
    n = s + n_extra * L
    lay = rad_layout(torch.tensor([p]), torch.tensor([n]), L)
    for shift in (False, True):
        for j in range(L):
            col = readout_column(j, L, shift)  # query column, the previous block as L clean slots
            want = lay.prediction_slot(torch.tensor([[s + j]]), shift)[0, 0]
            # query column c < L is clean index s - L + c; column L + j' is the noisy twin of s + j'
            names = (False, s - L + col) if col < L else (True, s + col - L)
            got = (bool(lay.noisy[0, want]), int(lay.clean_index[0, want]))
            assert got == names
