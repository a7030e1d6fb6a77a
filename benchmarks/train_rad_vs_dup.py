"""RAD against full duplication: one forward+backward of the diffusion loss, side by side.

    python benchmarks/train_rad_vs_dup.py [--quick] [--out PATH] [--layers N] [--repeats K]

A 0.5B-shaped random Qwen2 (hidden 896, 14 heads, 2 KV heads, vocab 151,936, 24 layers; about
8 minutes on 2 CPU cores, ``--layers 8`` for a 3-minute run) trains one step on a vision-heavy
shape: P=1024 prompt tokens, R=128 response tokens, L=8. Both layouts see the same masked
positions; the rows are timed alternately (paired) and the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine_info, print_table, rss_peak_growth, write_json

from blockdistill import BlockDiffusionLM, BlockSpec
from blockdistill.data import BlockCollator
from blockdistill.losses import diffusion_loss
from blockdistill.losses.noise import sample_noise


def build(hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int, device: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab + 1, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=32768,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(device)
    spec = BlockSpec(block_size=8, mask_token_id=vocab, eos_token_id=0, pad_token_id=0)
    return BlockDiffusionLM(model, spec).train()


def attention_flops(tokens_q_k_pairs: int, hidden: int, layers: int) -> float:
    """QK^T and AV over the allowed pairs: 4 * pairs * hidden per layer (forward)."""
    return 4.0 * tokens_q_k_pairs * hidden * layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/train_rad_vs_dup.json")
    ap.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--prompt", type=int, default=None)
    ap.add_argument("--memory-child", choices=("rad", "full_dup"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        shape = dict(hidden=256, layers=2, heads=4, kv=2, inter=512, vocab=32000)
        p, r, repeats = 512, 64, 3
    else:
        # All 24 layers: with fewer, the full-vocabulary embedding/head gradients (the same in both
        # layouts) weigh more in the peak (8 layers: 0.83x instead of 0.56x).
        layers = args.layers or 24
        shape = dict(hidden=896, layers=layers, heads=14, kv=2, inter=4864, vocab=151936)
        p, r, repeats = 1024, 128, 5
    p = args.prompt or p
    repeats = args.repeats or repeats
    bd = build(**shape, device=device)
    size = bd.block_size
    g = torch.Generator().manual_seed(0)
    ex = [{"prompt_ids": torch.randint(1, shape["vocab"], (p,), generator=g),
           "response_ids": torch.randint(1, shape["vocab"], (r,), generator=g)}]
    batch = BlockCollator(size, 0, 0)(ex).to(device)
    maskable = batch.maskable()
    noise = sample_noise(maskable.cpu(), size, generator=torch.Generator().manual_seed(1))
    noise.masked, noise.rate = noise.masked.to(device), noise.rate.to(device)

    def step(layout: str) -> tuple[float, int]:
        bd.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss, _ = diffusion_loss(bd, batch.input_ids, batch.prompt_lens, batch.seq_lens, maskable, [noise],
                                 layout=layout)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = 0  # CPU: measured in a child process (_cpu_peak_in_child)
        return time.perf_counter() - t0, peak

    n = int(batch.seq_lens[0])
    s = (p // size) * size
    tokens = {"rad": n + (n - s), "full_dup": 2 * n}
    # warm-up both, then alternate so drift hits both layouts alike
    if args.memory_child:
        # One step in a fresh process (no memory freed by earlier steps to reuse): the growth of
        # RSS over its value before the step, sampled every 2 ms, is the step's peak memory.
        print(f"PEAK_BYTES {rss_peak_growth(lambda: step(args.memory_child))}")
        return
    for lay in ("rad", "full_dup"):
        step(lay)
    times = {"rad": [], "full_dup": []}
    peaks = {"rad": 0, "full_dup": 0}
    for _ in range(repeats):
        for lay in ("rad", "full_dup"):
            t, peak = step(lay)
            times[lay].append(t)
            peaks[lay] = max(peaks[lay], peak)
    if device == "cpu":
        peaks = {lay: _cpu_peak_in_child(lay) for lay in peaks}
    from blockdistill.layout import dense_mask, full_dup_layout, rad_layout

    pairs = {
        "rad": int(dense_mask(rad_layout(batch.prompt_lens.cpu(), batch.seq_lens.cpu(), size)).sum()),
        "full_dup": int(dense_mask(full_dup_layout(batch.seq_lens.cpu(), size)).sum()),
    }
    rows = [{"layout": lay, "P": p, "R": r, "L": size, "tokens": tokens[lay], "wall_s": statistics.median(times[lay]),
             "peak_mem_bytes": peaks[lay], "attention_pairs": pairs[lay],
             "attention_flops": attention_flops(pairs[lay], shape["hidden"], shape["layers"])} for lay in times]
    paired = statistics.median([d / r_ for r_, d in zip(times["rad"], times["full_dup"])])
    summary = {
        "speedup_paired_median": paired,
        "speedup_of_medians": rows[1]["wall_s"] / rows[0]["wall_s"],
        "peak_mem_ratio_rad_over_dup": rows[0]["peak_mem_bytes"] / max(1, rows[1]["peak_mem_bytes"]),
        "token_ratio_dup_over_rad": tokens["full_dup"] / tokens["rad"],
        "attention_flop_ratio_dup_over_rad": pairs["full_dup"] / pairs["rad"],
        "model": {**shape, "device": device},
    }
    print_table(rows, ["layout", "P", "R", "L", "tokens", "wall_s", "peak_mem_bytes", "attention_pairs"])
    for k, v in summary.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    write_json(args.out, {"machine": machine_info(), "rows": rows, "summary": summary})


def _cpu_peak_in_child(layout: str) -> int:
    """Peak memory of one CPU step, measured in a fresh process (RSS growth during the step).

    Sampling RSS in the timing process is unreliable: the allocator reuses memory freed by earlier
    steps, and ``ru_maxrss`` is dominated by model construction.
    """
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--memory-child", layout, "--out", "/dev/null"],
                         capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK_BYTES")))


if __name__ == "__main__":
    main()
