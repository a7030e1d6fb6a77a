"""DCD trajectories (DESIGN.md §4): commit steps, committed tokens, the teacher's rows at the
commit step and at the block's first step."""

import pytest
import torch

from blockdistill.losses import TokenDists
from blockdistill.sampling import ConfidenceThreshold, OneStep, TraceSpec, block_generate
from tests.sampling.helpers import denoiser, random_prompts, text_bd, variant


def _run(L=4, shift=False, lens=(6,), seed=0, policy=None, record=TraceSpec(), **kw):
    ids, plen = random_prompts(list(lens), seed)
    return block_generate(denoiser(text_bd(), L, shift), ids, plen, policy=policy or ConfidenceThreshold(),
                          cache="fused", max_new_tokens=kw.pop("max_new_tokens", 10), stop_at_eos=False,
                          record=record, **kw), ids, plen


def test_no_traces_unless_asked():
    out, _, _ = _run(record=None)
    assert out.traces is None


@pytest.mark.parametrize("shift", [False, True])
def test_commit_rows_are_the_teacher_conditionals(shift):
    """q_i must be the teacher's distribution given the tokens committed *before* step k(i):
    recompute it with the training forward from the trace alone."""
    L = 4
    out, ids, plen = _run(L=L, shift=shift, lens=(6,), seed=1)
    tr = out.traces[0]
    p = int(plen[0])
    bd = variant(text_bd(), L, shift)
    assert tr.prompt_len == p and tr.block_size == L
    assert torch.equal(tr.tokens[: len(out.sequences[0])], out.sequences[0])
    assert (tr.step >= 1).all() and (tr.step <= L).all()
    assert tr.step.max() > 1  # some block took several steps, so the check below means something
    full = torch.cat([ids[0, :p], tr.tokens])
    blocks = tr.block_ids()
    for blk in blocks.unique().tolist():
        pos = (blocks == blk).nonzero()[:, 0]
        n = (blk + 1) * L
        for k in tr.step[pos].unique().tolist():
            masked_pos = pos[tr.step[pos] >= k]
            masked = torch.zeros(1, n, dtype=torch.bool)
            masked[0, p + masked_pos] = True
            with torch.no_grad():
                logits = bd.diffusion_logits(full[None, :n], plen, torch.tensor([n]), masked,
                                             (p + masked_pos)[None])[0]
            logits[:, bd.spec.mask_token_id] = float("-inf")
            q = torch.softmax(logits, -1)
            now = tr.step[masked_pos] == k
            torch.testing.assert_close(tr.commit.probs[masked_pos[now]], q[now])
            if k == 1:
                torch.testing.assert_close(tr.first.probs[masked_pos], q)
    assert torch.equal(tr.commit.probs.argmax(-1), tr.tokens)


def test_one_step_trace_has_step_one_and_equal_rows():
    out, _, _ = _run(policy=OneStep(), lens=(5, 9))
    for tr, seq in zip(out.traces, out.sequences):
        assert (tr.step == 1).all()
        torch.testing.assert_close(tr.commit.probs, tr.first.probs)
        assert tr.length == -(-(tr.prompt_len + 10) // 4) * 4 - tr.prompt_len
        assert torch.equal(tr.tokens[:10], seq)


def _brute_top_k(row: torch.Tensor, k: int) -> list[int]:
    """The k ids of largest probability, ties to the lowest id, by sorting (id order breaks ties)."""
    return sorted(range(row.shape[0]), key=lambda i: (-float(row[i]), i))[:k]


def test_top_k_rows():
    full, _, _ = _run(lens=(5, 8), seed=2)
    topk, _, _ = _run(lens=(5, 8), seed=2, record=TraceSpec(top_k=3))
    for a, b in zip(full.traces, topk.traces):
        assert b.commit.is_topk and b.commit.indices.shape == (a.length, 3)
        for rows_a, rows_b in ((a.commit, b.commit), (a.first, b.first)):
            for i in range(a.length):
                want = _brute_top_k(rows_a.probs[i], 3)
                assert rows_b.indices[i].tolist() == want
                torch.testing.assert_close(rows_b.values[i], rows_a.probs[i, want])
            torch.testing.assert_close(rows_b.leftover, 1 - rows_b.values.sum(-1))
            assert torch.equal(rows_b.argmax(), rows_a.argmax())
        assert torch.equal(b.commit.argmax(), b.tokens)
        assert torch.equal(a.step, b.step) and torch.equal(a.tokens, b.tokens)


def test_batched_traces_equal_alone():
    out, ids, plen = _run(lens=(3, 9, 6), seed=3)
    for b in range(3):
        ids_b, plen_b = ids[b: b + 1, : int(plen[b])], plen[b: b + 1]
        one = block_generate(denoiser(text_bd(), 4, False), ids_b, plen_b, max_new_tokens=10, stop_at_eos=False,
                             record=TraceSpec()).traces[0]
        tr = out.traces[b]
        assert torch.equal(one.step, tr.step) and torch.equal(one.tokens, tr.tokens)
        torch.testing.assert_close(one.commit.probs, tr.commit.probs)


def test_trace_spec_validation():
    with pytest.raises(ValueError, match="top_k"):
        TraceSpec(top_k=0)
    rows = TokenDists.from_probs(torch.tensor([[0.5, 0.3, 0.2]]), 2)
    assert rows.indices.tolist() == [[0, 1]] and rows.leftover.tolist() == pytest.approx([0.2])
