"""Decoding speed, side by side: AR, multi-step (tau 0.85), one-step unfused, one-step fused.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/decode.py [--quick] [--out PATH] [--repeats K]

Two random-init Qwen2 backbones (``small``: hidden 512, 8 layers, vocab 32k; ``0.5b``: the
Qwen2-0.5B shape), blocks of L in {4, 8}, batch 1 and 8, a 256-token prompt and exactly 128
generated tokens per row (``stop_at_eos=False``). Every cell is the median of ``--repeats``
runs after a warm-up. ``forward_cost`` times one cached forward over 1, L and 2L new tokens
(context = prompt + half the generation) in the same run; they bound what caching can give:
fused/AR <= L * t(1) / t(2L) and fused/unfused <= 2 * t(L) / t(2L). Run it alone: the numbers
are meaningless beside another CPU-heavy process.

``--shift`` decodes with ``shift=True`` (logits at i-1 predict token i), as every model converted
from an AR checkpoint does (ECHO included). The unfused sampler's block-write pass then runs the
LM head on one row (the next block's first token); without shift it runs none. ``t_write`` is
that pass timed as the sampler runs it, and ``(t(L) + t_write) / t(2L)`` the exact bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, print_table, set_threads, sync, write_json  # noqa: E402

from blockdistill import BlockDiffusionLM, BlockSpec  # noqa: E402
from blockdistill.sampling import (  # noqa: E402
    ConfidenceThreshold,
    HFDenoiser,
    OneStep,
    ar_generate,
    block_generate,
)

MODELS = {
    "small": dict(hidden=512, layers=8, heads=8, kv=2, inter=1536, vocab=32000, tie=False),
    "0.5b": dict(hidden=896, layers=24, heads=14, kv=2, inter=4864, vocab=151936, tie=True),
}
QUICK_MODELS = {
    "small": dict(hidden=128, layers=2, heads=4, kv=2, inter=256, vocab=4000, tie=False),
    "0.5b": dict(hidden=224, layers=4, heads=7, kv=1, inter=512, vocab=16000, tie=True),
}
METHODS = ("ar", "multistep", "onestep_unfused", "onestep_fused")


def build(shape: dict, L: int, device: str, dtype: torch.dtype, shift: bool = False) -> BlockDiffusionLM:
    """A random-init Qwen2 with one extra row for [MASK] (the last id)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    v = shape["vocab"]
    cfg = Qwen2Config(vocab_size=v + 1, hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      num_key_value_heads=shape["kv"], max_position_embeddings=4096,
                      tie_word_embeddings=shape["tie"], initializer_range=0.1)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    return BlockDiffusionLM(model, BlockSpec(block_size=L, mask_token_id=v, eos_token_id=0, pad_token_id=0,
                                             shift=shift))


def with_block(bd: BlockDiffusionLM, L: int) -> BlockDiffusionLM:
    spec = BlockSpec(block_size=L, mask_token_id=bd.spec.mask_token_id, eos_token_id=bd.spec.eos_token_id,
                     pad_token_id=bd.spec.pad_token_id, shift=bd.spec.shift)
    return BlockDiffusionLM(bd.model, spec, attn_backend=bd.attn_backend)


def run_method(method: str, bd: BlockDiffusionLM, ids: torch.Tensor, lens: torch.Tensor, new: int):
    if method == "ar":
        return ar_generate(bd, ids, lens, max_new_tokens=new, stop_at_eos=False)
    den = HFDenoiser(bd)
    policy = ConfidenceThreshold(0.85) if method == "multistep" else OneStep()
    cache = "block" if method == "onestep_unfused" else "fused"
    return block_generate(den, ids, lens, policy=policy, cache=cache, max_new_tokens=new, stop_at_eos=False)


def measure(method, bd, ids, lens, new, repeats):
    """Median throughput over ``repeats`` runs (after one warm-up run)."""
    run_method(method, bd, ids, lens, new)
    outs = [run_method(method, bd, ids, lens, new) for _ in range(repeats)]
    med = lambda f: statistics.median(f(o.stats) for o in outs)  # noqa: E731
    st = outs[0].stats
    return dict(tokens_per_s=med(lambda s: s.tokens_per_s), tokens_per_s_decode=med(lambda s: s.tokens_per_s_decode),
                nfe=st.nfe, nfe_decode=st.nfe_decode, tpf=st.tpf, wall_s=med(lambda s: s.wall_s),
                generated_tokens=st.generated_tokens)


@torch.no_grad()
def forward_cost(bd: BlockDiffusionLM, context: int, tokens: int, repeats: int, device: str,
                 head_rows: int | None = None) -> float:
    """Median seconds of one cached forward over ``tokens`` new tokens at ``context`` cached
    tokens, batch 1, LM head on the last ``head_rows`` slots (default min(tokens, L); a block
    write pass runs 1 with shift, else 0), through the sampler's own path."""
    den = HFDenoiser(bd)
    L = bd.spec.block_size
    ctx = (context // L) * L
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, bd.spec.mask_token_id, (1, ctx + 1), generator=g).to(device)
    state, _ = den.prefill(ids, torch.tensor([ctx + 1], device=device))
    q = torch.randint(0, bd.spec.mask_token_id, (1, tokens), generator=g).to(device)
    idx = torch.arange(ctx, ctx + tokens, device=device)[None]
    k = min(tokens, L) if head_rows is None else head_rows
    at = torch.arange(tokens - k, tokens, device=device)[None] if k else None
    # A noisy-only query (append=0) is cropped away afterwards: the cache length stays fixed.
    times = []
    for r in range(repeats + 2):
        sync(device)
        t = time.perf_counter()
        den.forward(state, q, idx, 0, at)
        sync(device)
        if r >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/decode.json")
    ap.add_argument("--quick", action="store_true", help="small models and lengths: under a minute")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    ap.add_argument("--models", default=None, help="comma-separated subset of: " + ",".join(MODELS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    ap.add_argument("--blocks", default="4,8", help="block sizes L to measure (default 4,8)")
    ap.add_argument("--batches", default="1,8", help="batch sizes to measure (default 1,8)")
    ap.add_argument("--shift", action="store_true", help="decode with shift=True (AR-converted models, ECHO)")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    device = args.device
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
    models = QUICK_MODELS if args.quick else MODELS
    prompt, new = (64, 32) if args.quick else (256, 128)
    repeats = args.repeats or (1 if args.quick else 3)
    blocks = tuple(int(x) for x in args.blocks.split(","))
    batches = tuple(int(x) for x in args.batches.split(","))
    names = args.models.split(",") if args.models else list(models)

    rows, costs, limits = [], [], []
    t_start = time.perf_counter()
    for name in names:
        base = build(models[name], blocks[0], device, dtype, shift=args.shift)
        g = torch.Generator().manual_seed(0)
        for batch in batches:
            ids = torch.randint(0, base.spec.mask_token_id, (batch, prompt), generator=g).to(device)
            lens = torch.full((batch,), prompt, device=device)
            ar = measure("ar", base, ids, lens, new, repeats)
            for L in blocks:
                bd = with_block(base, L)
                rows.append(dict(model=name, L=L, batch=batch, method="ar", **ar))  # measured once, shown per L
                for method in METHODS[1:]:
                    rows.append(dict(model=name, L=L, batch=batch, method=method,
                                     **measure(method, bd, ids, lens, new, repeats)))
                    print(f"[{time.perf_counter() - t_start:6.1f}s] {name} L={L} batch={batch} {method}: "
                          f"{rows[-1]['tokens_per_s']:.1f} tok/s", flush=True)
        context = prompt + new // 2
        for L in blocks:
            bd = with_block(base, L)
            t = {n: forward_cost(bd, context, n, max(5, repeats * 3), device) for n in sorted({1, L, 2 * L})}
            for n, sec in t.items():  # the LM head runs on min(n, L) rows, so t(n) depends on L
                costs.append(dict(model=name, L=L, tokens=n, logit_rows=min(n, L), seconds=sec))
            write_rows = int(args.shift)  # with shift the write pass predicts the next block's first token
            t_write = forward_cost(bd, context, L, max(5, repeats * 3), device, head_rows=write_rows)
            costs.append(dict(model=name, L=L, tokens=L, logit_rows=write_rows, seconds=t_write))
            # The unfused write pass runs the LM head on write_rows rows (not L), so
            # (t(L) + t_write) / t(2L) is the exact bound for this implementation; 2 t(L) / t(2L)
            # is the conventional one.
            limits.append(dict(model=name, L=L, fused_vs_ar_limit=L * t[1] / t[2 * L],
                               fused_vs_unfused_limit=2 * t[L] / t[2 * L],
                               fused_vs_unfused_limit_exact=(t[L] + t_write) / t[2 * L]))
        del base

    by = {(r["model"], r["L"], r["batch"], r["method"]): r for r in rows}
    for r in rows:
        ar = by[(r["model"], r["L"], r["batch"], "ar")]
        r["vs_ar"] = r["tokens_per_s"] / ar["tokens_per_s"]
        r["vs_ar_decode"] = r["tokens_per_s_decode"] / ar["tokens_per_s_decode"]
        if r["method"] == "onestep_fused":
            r["fused_vs_unfused"] = r["tokens_per_s"] / by[(r["model"], r["L"], r["batch"], "onestep_unfused")]["tokens_per_s"]
    for lim in limits:
        f = by[(lim["model"], lim["L"], 1, "onestep_fused")]
        u = by[(lim["model"], lim["L"], 1, "onestep_unfused")]
        a = by[(lim["model"], lim["L"], 1, "ar")]
        lim["fused_vs_ar"] = f["tokens_per_s_decode"] / a["tokens_per_s_decode"]
        lim["fused_vs_unfused"] = f["tokens_per_s_decode"] / u["tokens_per_s_decode"]
        lim["fraction_of_ar_limit"] = lim["fused_vs_ar"] / lim["fused_vs_ar_limit"]
        lim["fraction_of_unfused_limit"] = lim["fused_vs_unfused"] / lim["fused_vs_unfused_limit"]
        lim["fraction_of_unfused_limit_exact"] = lim["fused_vs_unfused"] / lim["fused_vs_unfused_limit_exact"]

    print()
    print_table(rows, ["model", "L", "batch", "method", "tokens_per_s", "tokens_per_s_decode", "nfe", "tpf",
                       "vs_ar", "vs_ar_decode", "fused_vs_unfused"])
    print("\nforward cost (batch 1, cached, seconds per forward):")
    print_table(costs, ["model", "L", "tokens", "logit_rows", "seconds"])
    print("\nbatch 1, decode throughput ratios against their forward-cost limits:")
    print_table(limits, ["model", "L", "fused_vs_ar", "fused_vs_ar_limit", "fraction_of_ar_limit",
                         "fused_vs_unfused", "fused_vs_unfused_limit", "fraction_of_unfused_limit",
                         "fused_vs_unfused_limit_exact", "fraction_of_unfused_limit_exact"])
    config = dict(prompt=prompt, new_tokens=new, repeats=repeats, blocks=list(blocks), batches=list(batches),
                  shift=args.shift,
                  device=device, dtype=str(dtype), threads=threads, quick=args.quick,
                  models={n: models[n] for n in names})
    write_json(args.out, {"machine": machine_info(), "config": config, "rows": rows, "forward_cost": costs,
                          "limits": limits})


if __name__ == "__main__":
    main()
