"""LoRA against full fine-tuning: one RAD training step (forward, backward, AdamW), side by side.

    python benchmarks/lora.py [--quick] [--out PATH] [--layers N] [--repeats K] [--rank R]

A 0.5B-shaped random Qwen2 (hidden 896, 14 heads, 2 KV heads, vocab 151,936, 24 layers, tied
head, as ``train_rad_vs_dup.py``) takes one RAD step on P=256 prompt and R=64 response tokens,
L=8, batch 1, three ways:

- ``full``: every weight trains (AdamW state for all of them);
- ``lora``: what a ``lora:`` config section trains (``blockdistill.models.lora.apply_lora``):
  rank-16 adapters on every linear layer of the decoder and the ``[MASK]`` rows through PEFT's
  ``trainable_token_indices``;
- ``lora_adapters_only``: the same adapters with the ``[MASK]`` row frozen (not a usable setting
  for a converted AR model, whose ``[MASK]`` row is new): the difference to ``lora`` is the
  cost of PEFT's trainable-token wrapper, which builds a full copy of the embedding matrix (and of
  a tied head) in every forward (``index_copy``, not in place).

``full`` and ``lora`` are timed alternately in one process (paired rounds after a warm-up), then
``full`` is freed and ``lora`` and ``lora_adapters_only`` alternate. Times are medians;
``*_ratio`` in the summary are medians of per-round ratios. Peak memory is the growth over the
weights during two steps (the first allocates the optimiser state): on a GPU
``torch.cuda.max_memory_allocated``; on a CPU the RSS growth sampled every 2 ms in a fresh process
per mode (the allocator reuses memory freed by earlier steps, so the timing process cannot tell).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, print_table, rss_peak_growth, sync, write_json  # noqa: E402

from blockdistill import BlockDiffusionLM, BlockSpec  # noqa: E402
from blockdistill.config import LoraConfig  # noqa: E402
from blockdistill.data import BlockCollator  # noqa: E402
from blockdistill.losses import diffusion_loss  # noqa: E402
from blockdistill.losses.noise import sample_noise  # noqa: E402
from blockdistill.models.lora import apply_lora, lora_targets  # noqa: E402

MODES = ("full", "lora", "lora_adapters_only")


def build(mode: str, shape: dict, rank: int, device: str) -> tuple[BlockDiffusionLM, torch.optim.Optimizer]:
    """The model for ``mode`` (same seed, same weights) and its AdamW over the weights that train."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=shape["vocab"] + 1, hidden_size=shape["hidden"], intermediate_size=shape["inter"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      num_key_value_heads=shape["kv"], max_position_embeddings=32768, tie_word_embeddings=True)
    torch.manual_seed(0)
    bd = BlockDiffusionLM(Qwen2ForCausalLM(cfg).to(device),
                          BlockSpec(block_size=8, mask_token_id=shape["vocab"], eos_token_id=0, pad_token_id=0))
    lcfg = LoraConfig(r=rank, alpha=2.0 * rank)
    if mode == "lora":
        apply_lora(bd, lcfg)
    elif mode == "lora_adapters_only":
        import peft

        peft.get_peft_model(bd.model, peft.LoraConfig(r=rank, lora_alpha=2.0 * rank,
                                                      target_modules=lora_targets(bd)))
    bd.train()
    params = [p for p in bd.parameters() if p.requires_grad]
    return bd, torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)


def make_batch(shape: dict, p: int, r: int, device: str):
    g = torch.Generator().manual_seed(0)
    ex = [{"prompt_ids": torch.randint(1, shape["vocab"], (p,), generator=g),
           "response_ids": torch.randint(1, shape["vocab"], (r,), generator=g)}]
    batch = BlockCollator(8, 0, 0)(ex).to(device)
    maskable = batch.maskable()
    noise = sample_noise(maskable.cpu(), 8, generator=torch.Generator().manual_seed(1))
    noise.masked, noise.rate = noise.masked.to(device), noise.rate.to(device)
    return batch, maskable, noise


def step(bd: BlockDiffusionLM, opt: torch.optim.Optimizer, data, device: str) -> float:
    batch, maskable, noise = data
    sync(device)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss, _ = diffusion_loss(bd, batch.input_ids, batch.prompt_lens, batch.seq_lens, maskable, [noise], layout="rad")
    loss.backward()
    opt.step()
    sync(device)
    return time.perf_counter() - t0


def counts(bd: BlockDiffusionLM) -> dict:
    trainable = sum(p.numel() for p in bd.parameters() if p.requires_grad)
    total = sum(p.numel() for p in bd.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total}


def paired(names: tuple[str, str], models: dict, data, repeats: int, device: str) -> dict[str, list[float]]:
    """Warm up each (its optimiser state is allocated), then ``repeats`` alternating rounds."""
    for n in names:
        step(*models[n], data, device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for n in names:
            times[n].append(step(*models[n], data, device))
    return times


def memory_child(mode: str, shape: dict, rank: int, p: int, r: int, device: str) -> int:
    """Peak memory growth over the built model during two steps of ``mode``, in bytes."""
    bd, opt = build(mode, shape, rank, device)
    data = make_batch(shape, p, r, device)
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step(bd, opt, data, device)
        return torch.cuda.max_memory_allocated() - base
    def two_steps() -> None:
        for _ in range(2):
            step(bd, opt, data, device)

    return rss_peak_growth(two_steps)


def peak_in_child(mode: str, argv: list[str]) -> int:
    """Run :func:`memory_child` in a fresh process (nothing freed earlier to reuse)."""
    import subprocess

    out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--memory-child", mode,
                          "--out", os.devnull], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("PEAK_BYTES")))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/lora.json")
    ap.add_argument("--quick", action="store_true", help="small sizes, well under a minute")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=None)
    ap.add_argument("--response", type=int, default=None)
    ap.add_argument("--memory-child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        shape = dict(hidden=128, layers=2, heads=4, kv=2, inter=256, vocab=4096)
        p, r, repeats = 64, 32, 2
    else:
        shape = dict(hidden=896, layers=24, heads=14, kv=2, inter=4864, vocab=151936)
        p, r, repeats = 256, 64, 3
    if args.layers:
        shape["layers"] = args.layers
    p, r, repeats = args.prompt or p, args.response or r, args.repeats or repeats
    if args.memory_child:
        print(f"PEAK_BYTES {memory_child(args.memory_child, shape, args.rank, p, r, device)}")
        return 0

    data = make_batch(shape, p, r, device)
    models = {m: build(m, shape, args.rank, device) for m in ("full", "lora")}
    info = {m: counts(bd) for m, (bd, _) in models.items()}
    first = paired(("full", "lora"), models, data, repeats, device)
    del models["full"]
    gc.collect()
    models["lora_adapters_only"] = build("lora_adapters_only", shape, args.rank, device)
    info["lora_adapters_only"] = counts(models["lora_adapters_only"][0])
    second = paired(("lora", "lora_adapters_only"), models, data, repeats, device)
    del models
    gc.collect()
    peaks = {m: peak_in_child(m, argv) for m in MODES}

    times = {"full": first["full"], "lora": first["lora"] + second["lora"],
             "lora_adapters_only": second["lora_adapters_only"]}
    weight_bytes = 4 * info["full"]["total_params"]
    rows = [{"mode": m, "P": p, "R": r, "L": 8, "rank": 0 if m == "full" else args.rank, **info[m],
             "wall_s": statistics.median(times[m]), "peak_mem_bytes": peaks[m]} for m in MODES]
    summary = {
        "lora_over_full_time_ratio": statistics.median([lo / f for f, lo in zip(first["full"], first["lora"])]),
        "lora_over_full_peak_mem_ratio": peaks["lora"] / max(1, peaks["full"]),
        "token_rows_time_ratio": statistics.median([lo / a for lo, a in zip(second["lora"],
                                                                           second["lora_adapters_only"])]),
        "token_rows_extra_peak_mem_bytes": peaks["lora"] - peaks["lora_adapters_only"],
        "embedding_copy_bytes": 4 * (shape["vocab"] + 1) * shape["hidden"],
        "weight_bytes": weight_bytes,
        "repeats": repeats,
        "model": {**shape, "device": device},
    }
    notes = ["peak_mem_bytes: growth over the built model's weights during two steps (optimiser state, "
             "gradients, activations, temporaries)",
             "token_rows_*: lora against lora_adapters_only, i.e. the cost of PEFT's trainable_token_indices "
             "wrapper on the [MASK] row (a full embedding copy per forward; embedding_copy_bytes each)"]
    print_table(rows, ["mode", "P", "R", "L", "rank", "trainable_params", "wall_s", "peak_mem_bytes"])
    for k, v in summary.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    write_json(args.out, {"machine": machine_info(), "config": {"P": p, "R": r, "L": 8, "rank": args.rank,
                                                                "repeats": repeats, **shape},
                          "rows": rows, "summary": summary, "notes": notes})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
