"""Speed beside quality: interleaved tokens/s per variant, and the forward-cost limit on a speed-up.

* :func:`measure_speed` decodes the same studies with every variant, variant after variant *per
  chunk*, so that machine noise (another process, a frequency change) hits all of them alike; the
  ratios it gives are side by side in one run.
* :func:`forward_cost_limit` times what bounds one-step block decoding against AR at batch 1: a
  fused pass of ``2L`` tokens commits ``L`` tokens where AR's 1-token pass commits one, so decode
  tokens/s can at best reach ``L * t(1) / t(2L)`` times AR's. On a GPU ``t(2L) ~ t(1)`` and the
  limit is about L; on a CPU a forward's cost grows with its tokens and the limit is lower. A
  measured ratio is then judged against this machine's limit, not against L.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from blockdistill.evaluation.generate import generate_split
from blockdistill.evaluation.sampler import Variant
from blockdistill.evaluation.stats import RunStats

__all__ = ["forward_cost_limit", "measure_speed"]


def measure_speed(variants: Sequence[Variant], examples: Sequence[Mapping[str, Any]], tokenizer: Any, n: int,
                  batch_size: int = 1) -> dict[str, dict[str, float]]:
    """tokens/s (prefill included and decode only), TPF, decode forwards per report and count of
    each variant on the first ``n`` examples, ``batch_size`` at a time, variants interleaved chunk
    by chunk after one untimed warm-up chunk each."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    subset = [examples[i] for i in range(min(n, len(examples)))]
    totals = {v.name: RunStats() for v in variants}
    for v in variants:
        generate_split(v, subset[:batch_size], tokenizer, batch_size=batch_size, progress=False)
    for start in range(0, len(subset), batch_size):
        chunk = subset[start:start + batch_size]
        for v in variants:
            for stats in generate_split(v, chunk, tokenizer, batch_size=batch_size, progress=False).stats.values():
                totals[v.name] = totals[v.name].merge(stats)
    return {name: {"tokens_per_s": s.tokens_per_s, "tokens_per_s_decode": s.tokens_per_s_decode, "tpf": s.tpf,
                   "nfe": s.forwards_per_sample, "n": s.n} for name, s in totals.items()}


@torch.no_grad()
def forward_cost_limit(model: Any, context: int, repeats: int = 20, seed: int = 1) -> dict[str, float]:
    """Median seconds of one cached forward at batch 1 over 1 and over ``2L`` new tokens, with the
    LM head on ``min(n, L)`` rows (what an AR step and a fused block pass need), at a prefilled
    context of ``context`` tokens (rounded down to whole blocks, at least one block), through the
    sampler's own denoiser. The two sizes are timed in alternation, after one warm-up round.

    Returns ``t1_s``, ``t2L_s``, ``block_size``, ``context`` and ``limit = L * t1 / t2L``.
    """
    from blockdistill.sampling.hf import HFDenoiser

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    den, size = HFDenoiser(model), model.spec.block_size
    device = next(model.parameters()).device
    ctx = max(size, (context // size) * size)
    g = torch.Generator().manual_seed(seed)
    vocab = model.spec.mask_token_id
    ids = torch.randint(0, vocab, (1, ctx + 1), generator=g).to(device)
    state, _ = den.prefill(ids, torch.tensor([ctx + 1], device=device))
    times: dict[int, list[float]] = {1: [], 2 * size: []}
    for r in range(repeats + 1):
        for n in times:
            q = torch.randint(0, vocab, (1, n), generator=g).to(device)
            idx = torch.arange(ctx, ctx + n, device=device)[None]
            at = torch.arange(n - min(n, size), n, device=device)[None]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            den.forward(state, q, idx, 0, at)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r:  # round 0 is warm-up
                times[n].append(time.perf_counter() - t)
    t1, t2 = statistics.median(times[1]), statistics.median(times[2 * size])
    return {"t1_s": t1, "t2L_s": t2, "block_size": size, "context": ctx, "limit": size * t1 / t2}
