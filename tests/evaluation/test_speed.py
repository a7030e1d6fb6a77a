"""``forward_cost_limit``: which forwards it times, on what cache, and the limits it derives.

The clock is replaced by one that advances by a known cost per forward (from the query's size
and the LM-head rows the real forward returned), so every median and limit has an exact value.
"""

from __future__ import annotations

import types

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.evaluation import forward_cost_limit, forward_cost_sizes, speed
from blockdistill.sampling import OneStep, ar_generate, block_generate
from blockdistill.sampling import ar as ar_module
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.testing import tiny_qwen2, tiny_tokenizer


def _cost(tokens: int, rows: int) -> float:
    return 1.0 + 0.25 * tokens + 0.5 * rows


@pytest.mark.parametrize("shift", [False, True])
def test_forward_cost_limit_times_each_forward_on_a_fixed_cache(monkeypatch, shift):
    L = 4
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=L, shift=shift)
    clock, calls = [0.0], []
    real_forward, real_step = HFDenoiser.forward, ar_module.ar_step

    def forward(self, state, query_ids, query_index, append, logits_at):
        before, tail = state.length, state.tail_emb is not None
        out = real_forward(self, state, query_ids, query_index, append, logits_at)
        rows = 0 if out is None else out.shape[1]
        calls.append(("hf", query_ids.shape[1], rows, append, before, state.length, int(query_index[0, 0]), tail))
        clock[0] += _cost(query_ids.shape[1], rows)
        return out

    def step(model, embed, tok, index, delta, cache, mask):
        before = cache.get_seq_length()
        out = real_step(model, embed, tok, index, delta, cache, mask)
        calls.append(("ar", tok.shape[0], out.shape[0], 1, before, cache.get_seq_length(), int(index[0, 0]), False))
        clock[0] += _cost(1, 1)
        return out

    monkeypatch.setattr(HFDenoiser, "forward", forward)
    monkeypatch.setattr(ar_module, "ar_step", step)
    monkeypatch.setattr(speed, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    res = forward_cost_limit(bd, context=2 * L + 3, repeats=3)

    sizes = forward_cost_sizes(L, shift)
    assert sizes == {"t1": (1, 1), "tL": (L, L), "t2L": (2 * L, L), "t_write": (L, int(shift))}
    # one warm-up round and three timed ones, the sizes in alternation, each with its head rows;
    # t1 through the AR sampler's step, the others through the block sampler's denoiser with the
    # appends its decoders make (fused: a block appended while the next is denoised)
    paths = {"t1": ("ar", 1), "tL": ("hf", 0), "t2L": ("hf", L), "t_write": ("hf", L)}
    assert [(path, n, rows, append) for path, n, rows, append, *_ in calls] == \
        [(paths[k][0], n, rows, paths[k][1]) for k, (n, rows) in sizes.items()] * 4
    ctx = 2 * L   # rounded down to whole blocks; the context is put back after every forward
    assert all(before == ctx and after == ctx + append and start == ctx and not tail
               for _, _, _, append, before, after, start, tail in calls)
    t = {name: _cost(n, rows) for name, (n, rows) in sizes.items()}
    assert res["context"] == ctx and res["block_size"] == L and res["shift"] is shift
    assert (res["t1_s"], res["tL_s"], res["t2L_s"], res["t_write_s"]) == (t["t1"], t["tL"], t["t2L"], t["t_write"])
    assert res["limit"] == pytest.approx(L * t["t1"] / t["t2L"])
    assert res["unfused_limit"] == pytest.approx(2 * t["tL"] / t["t2L"])
    assert res["unfused_limit_exact"] == pytest.approx((t["tL"] + t["t_write"]) / t["t2L"])
    assert res["costs"] == [{"name": k, "tokens": n, "logit_rows": rows, "seconds": t[k]}
                            for k, (n, rows) in sizes.items()]


def test_timed_forwards_are_the_decoders_own(monkeypatch):
    """The signature of every forward the decoders run (one-step fused after its first block;
    the AR sampler's steps) is the one ``forward_cost_limit`` times for t(2L) and t(1)."""
    L = 4
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=L, shift=True)
    seen: list[tuple] = []
    real_forward, real_step = HFDenoiser.forward, ar_module.ar_step

    def forward(self, state, query_ids, query_index, append, logits_at):
        key = (state.tail_emb is None, query_ids.shape[1], append, None if logits_at is None else logits_at.shape[1])
        seen.append(("hf", *key))
        return real_forward(self, state, query_ids, query_index, append, logits_at)

    def step(model, embed, tok, index, delta, cache, mask):
        mask_shape = tuple((mask if not isinstance(mask, dict) else next(iter(mask.values()))).shape[2:])
        seen.append(("ar", tok.shape[0], index.shape, mask_shape[0], mask_shape[1] - cache.get_seq_length()))
        return real_step(model, embed, tok, index, delta, cache, mask)

    monkeypatch.setattr(HFDenoiser, "forward", forward)
    monkeypatch.setattr(ar_module, "ar_step", step)
    prompt = torch.tensor([[5, 6, 7, 8, 9, 10]])
    block_generate(HFDenoiser(bd), prompt, torch.tensor([6]), policy=OneStep(), cache="fused",
                   max_new_tokens=4 * L, stop_at_eos=False)
    ar_generate(bd, prompt, torch.tensor([6]), max_new_tokens=5, stop_at_eos=False)
    decoded = list(seen)
    seen.clear()
    forward_cost_limit(bd, context=2 * L, repeats=1)
    timed = set(seen)
    fused = [c for c in decoded if c[0] == "hf" and c[1]]  # blocks after the first
    ar = [c for c in decoded if c[0] == "ar"]
    assert fused and set(fused) == {("hf", True, 2 * L, L, L)} and ("hf", True, 2 * L, L, L) in timed
    # one token at one index, a one-row mask over the cache plus the new token
    assert ar and set(ar) == {("ar", 1, torch.Size([1, 1]), 1, 1)} and set(ar) <= timed


def test_forward_cost_limit_rejects_no_repeats():
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=2)
    with pytest.raises(ValueError, match="repeats"):
        forward_cost_limit(bd, context=8, repeats=0)
