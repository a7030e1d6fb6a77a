"""``forward_cost_limit``: which forwards it times, on what cache, and the limits it derives.

The clock is replaced by one that advances by a known cost per forward (from the query's size
and the LM-head rows the real forward returned), so every median and limit has an exact value.
"""

from __future__ import annotations

import types

import pytest

from blockdistill import BlockDiffusionLM
from blockdistill.evaluation import forward_cost_limit, forward_cost_sizes, speed
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.testing import tiny_qwen2, tiny_tokenizer


def _cost(tokens: int, rows: int) -> float:
    return 1.0 + 0.25 * tokens + 0.5 * rows


@pytest.mark.parametrize("shift", [False, True])
def test_forward_cost_limit_times_each_forward_on_a_fixed_cache(monkeypatch, shift):
    L = 4
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=L, shift=shift)
    clock, calls = [0.0], []
    real_forward = HFDenoiser.forward

    def forward(self, state, query_ids, query_index, append, logits_at):
        before = state.length
        out = real_forward(self, state, query_ids, query_index, append, logits_at)
        rows = 0 if out is None else out.shape[1]
        calls.append((query_ids.shape[1], rows, append, before, state.length, int(query_index[0, 0])))
        clock[0] += _cost(query_ids.shape[1], rows)
        return out

    monkeypatch.setattr(HFDenoiser, "forward", forward)
    monkeypatch.setattr(speed, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    res = forward_cost_limit(bd, context=2 * L + 3, repeats=3)

    sizes = forward_cost_sizes(L, shift)
    assert sizes == {"t1": (1, 1), "tL": (L, L), "t2L": (2 * L, L), "t_write": (L, int(shift))}
    # one warm-up round and three timed ones, the sizes in alternation, each with its head rows
    assert [(n, rows) for n, rows, *_ in calls] == list(sizes.values()) * 4
    ctx = 2 * L   # rounded down to whole blocks; the noisy-only queries leave the cache as it was
    assert all(append == 0 and before == after == ctx and start == ctx
               for _, _, append, before, after, start in calls)
    t = {name: _cost(n, rows) for name, (n, rows) in sizes.items()}
    assert res["context"] == ctx and res["block_size"] == L and res["shift"] is shift
    assert (res["t1_s"], res["tL_s"], res["t2L_s"], res["t_write_s"]) == (t["t1"], t["tL"], t["t2L"], t["t_write"])
    assert res["limit"] == pytest.approx(L * t["t1"] / t["t2L"])
    assert res["unfused_limit"] == pytest.approx(2 * t["tL"] / t["t2L"])
    assert res["unfused_limit_exact"] == pytest.approx((t["tL"] + t["t_write"]) / t["t2L"])
    assert res["costs"] == [{"name": k, "tokens": n, "logit_rows": rows, "seconds": t[k]}
                            for k, (n, rows) in sizes.items()]


def test_forward_cost_limit_rejects_no_repeats():
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=2)
    with pytest.raises(ValueError, match="repeats"):
        forward_cost_limit(bd, context=8, repeats=0)
