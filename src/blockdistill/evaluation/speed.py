"""Speed beside quality: interleaved tokens/s per variant, and the forward-cost limit on a speed-up.

* :func:`measure_speed` decodes the same studies with every variant, variant after variant *per
  chunk*, so that machine noise (another process, a frequency change) hits all of them alike; the
  ratios it gives are side by side in one run.
* :func:`forward_cost_limit` times what bounds one-step block decoding against AR at batch 1: a
  fused pass of ``2L`` tokens commits ``L`` tokens where AR's 1-token pass commits one, so decode
  tokens/s can at best reach ``L * t(1) / t(2L)`` times AR's. On a GPU ``t(2L) ~ t(1)`` and the
  limit is about L; on a CPU a forward's cost grows with its tokens and the limit is lower. A
  measured ratio is then judged against this machine's limit, not against L. Each forward is
  timed on its decoder's own code path (``t(1)`` the AR sampler's step, ``t(2L)`` the fused
  sampler's forward once the prompt tail is cached). It also times a
  one-block pass and the unfused sampler's block-write pass, which bound fused against unfused
  decoding. ``benchmarks/decode.py`` takes its forward costs from here too.
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

__all__ = ["forward_cost_limit", "forward_cost_sizes", "measure_speed"]


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


def forward_cost_sizes(block_size: int, shift: bool) -> dict[str, tuple[int, int]]:
    """The cached forwards that bound block decoding at batch 1, as ``name: (new tokens, LM-head
    rows)``: ``t1`` an AR step; ``tL`` a denoise pass over one block; ``t2L`` a fused pass (the
    finished block written while the next one is denoised, the head on its ``L`` noisy rows);
    ``t_write`` the unfused sampler's block-write pass, with the head on one row under ``shift``
    (the next block's first token) and on none without."""
    L = block_size
    return {"t1": (1, 1), "tL": (L, L), "t2L": (2 * L, L), "t_write": (L, int(shift))}


@torch.no_grad()
def forward_cost_limit(model: Any, context: int, repeats: int = 20, seed: int = 1) -> dict[str, Any]:
    """Median seconds of the cached forwards that bound block decoding at batch 1, at a prefilled
    context of ``context`` tokens (rounded down to whole blocks, at least one block), each timed on
    the code path its decoder runs, and the limits they set on the decode speed-ups.

    The forwards are those of :func:`forward_cost_sizes`, timed in alternation, one of each per
    round, after one warm-up round:

    - ``t1`` is :func:`~blockdistill.sampling.ar.ar_step`, the AR sampler's own step (its cache
      and its pre-rendered step mask, on an AR prefill of the context);
    - ``tL``, ``t2L`` and ``t_write`` are the block sampler's :class:`~blockdistill.sampling.hf.HFDenoiser`
      forwards as it sends them once the first block is cached (no prompt tail): a denoise pass
      (``L`` noisy slots, nothing appended), the fused pass (the finished block appended while the
      next one is denoised) and the unfused write pass (a block appended).

    After each forward the context is put back to ``context`` tokens, outside the clock. Masks
    are rendered once per shape (in the warm-up round), as the AR sampler renders its mask once
    per call: the block sampler's own per-block mask work is decoder overhead, outside the limit.

    Returns ``t1_s``, ``tL_s``, ``t2L_s``, ``t_write_s``, ``block_size``, ``context``, ``shift``,
    ``limit = L * t1 / t2L`` (fused against AR), ``unfused_limit = 2 * tL / t2L`` and
    ``unfused_limit_exact = (tL + t_write) / t2L`` (fused against the unfused block-cache
    sampler, which runs a denoise pass and a write pass per block where fused runs one pass),
    and ``costs``: one ``{"name", "tokens", "logit_rows", "seconds"}`` per forward.
    """
    from blockdistill.sampling.hf import HFDenoiser

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    den, size, shift = HFDenoiser(model), model.spec.block_size, bool(model.spec.shift)
    device = next(model.parameters()).device
    ctx = max(size, (context // size) * size)
    g = torch.Generator().manual_seed(seed)
    vocab = model.spec.mask_token_id
    ids = torch.randint(0, vocab, (1, ctx), generator=g).to(device)
    lens = torch.tensor([ctx], device=device)
    state, _ = den.prefill(ids, lens)
    state.tail_emb = state.tail_pos = None  # as once the first block (with the prompt tail) is cached
    step = _ArStep(model, ids, lens)
    sizes = forward_cost_sizes(size, shift)
    appends = {"t1": 1, "tL": 0, "t2L": size, "t_write": size}
    times: dict[str, list[float]] = {name: [] for name in sizes}
    for r in range(repeats + 1):
        for name, (n, head) in sizes.items():
            q = torch.randint(0, vocab, (1, n), generator=g).to(device)
            idx = torch.arange(ctx, ctx + n, device=device)[None]
            at = torch.arange(n - head, n, device=device)[None] if head else None
            append = appends[name]
            index, valid = state.index, state.valid
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            if name == "t1":
                step(q[:, 0])
            else:
                den.forward(state, q, idx, append, at)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r:  # round 0 is warm-up
                times[name].append(time.perf_counter() - t)
            if name == "t1":
                step.cache.crop(-1)
            elif append:  # back to the context of ``ctx`` tokens
                state.cache.crop(-append)
                state.index, state.valid = index, valid
    sec = {name: statistics.median(ts) for name, ts in times.items()}
    t1, tL, t2, tw = sec["t1"], sec["tL"], sec["t2L"], sec["t_write"]
    return {"t1_s": t1, "tL_s": tL, "t2L_s": t2, "t_write_s": tw, "block_size": size, "context": ctx,
            "shift": shift, "limit": size * t1 / t2, "unfused_limit": 2 * tL / t2,
            "unfused_limit_exact": (tL + tw) / t2,
            "costs": [{"name": name, "tokens": n, "logit_rows": head, "seconds": sec[name]}
                      for name, (n, head) in sizes.items()]}


class _ArStep:
    """The AR sampler's step on an AR prefill of ``ids`` (as :func:`~blockdistill.sampling.ar_generate`
    prefills and steps): ``self(tok)`` appends one token at the next clean index."""

    def __init__(self, model: Any, ids: torch.Tensor, lens: torch.Tensor) -> None:
        from blockdistill.layout import SlotLayout, clean_layout, padding_mask

        self.model, n = model, ids.shape[1]
        emb = model.embed(ids)
        pos, self.delta = model.positions(ids, padding_mask(lens, n))
        self.cache = model.new_cache()
        model.run(emb, pos, clean_layout(lens, 1, width=n), cache=self.cache)
        dev = ids.device
        lay = SlotLayout(torch.arange(n + 1, device=dev)[None], torch.zeros(1, n + 1, dtype=torch.bool, device=dev),
                         torch.ones(1, n + 1, dtype=torch.bool, device=dev), 1, n + 1)
        self.mask = model.render_mask(lay, emb.dtype, num_queries=1)
        self.index = torch.tensor([[n]], device=dev)
        self.embed = model.family.input_embeddings(model.model)

    def __call__(self, tok: torch.Tensor) -> torch.Tensor:
        from blockdistill.sampling.ar import ar_step

        return ar_step(self.model, self.embed, tok, self.index, self.delta, self.cache, self.mask)
