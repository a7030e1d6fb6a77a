"""What each training lever of the text example buys per step (issue 17), side by side.

The levers of ``examples/iu_text`` (bf16 autocast, a frozen embedding and LM head, length-bucketed
batches) change what one training step costs. This script times the AR step (stage 1) and the RAD
step (stage 2, L=8, shift) of the example's own model and data under each combination, the
variants interleaved round by round so that a noisy machine disturbs them alike:

    python benchmarks/iu_text_levers.py --run-dir runs/demo-text      # after `make demo-text`'s data stage
    python benchmarks/iu_text_levers.py --config examples/iu_text/configs/{cpu,tiny} --run-dir /tmp/t  # tiny stand-in

A step is the Lightning system's own loss (``ARSystem`` / ``RADSystem.compute_loss``), its
backward and an AdamW step, in a plain loop: Lightning adds the same hooks to every variant.
Reported: seconds per step (median over rounds of the mean over ``--steps`` batches), training
examples per second, and the padding share of the batches. The quality effect of freezing the
embedding is not measured here (it needs whole runs).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from _common import machine_info, print_table, set_threads, write_json  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool
    frozen: bool
    bucketing: bool


VARIANTS = [
    Variant("fp32", bf16=False, frozen=False, bucketing=False),
    Variant("bf16", bf16=True, frozen=False, bucketing=False),
    Variant("bf16+frozen", bf16=True, frozen=True, bucketing=False),
    Variant("bf16+frozen+bucketed (cpu config)", bf16=True, frozen=True, bucketing=True),
]


def _batches(samples, collate, batch_size: int, bucketing: bool, n: int, seed: int):
    from examples.iu_text.stages import _loader

    it = iter(_loader(samples, collate, batch_size, bucketing, seed))
    return [next(it) for _ in range(n)]


def _padding(batches) -> float:
    pad = total = 0
    for b in batches:
        width = b.input_ids.shape[1]
        total += width * b.input_ids.shape[0]
        pad += int((width - b.seq_lens).sum())
    return pad / total if total else 0.0


def _system(stage: str, model, tok, cfg):
    from blockdistill.lightning.ar import ARSystem
    from blockdistill.lightning.rad import RADSystem
    from blockdistill.recipes import wrap_for_stage

    if stage == "ar":
        return ARSystem(model, cfg.ar.optim)
    bd = wrap_for_stage(model, tok, block_size=8, shift=cfg.rad.shift, allow_block_size_change=True)
    return RADSystem(bd, cfg.rad.optim, cfg.rad.noise, layout=cfg.rad.layout, seed=cfg.seed)


def _step_seconds(system, batches, bf16: bool) -> float:
    import torch

    params = [p for p in system.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    t0 = time.perf_counter()
    for b in batches:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss, _ = system.compute_loss(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / len(batches)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["examples/iu_text/configs/cpu"], help="config layers, in order")
    ap.add_argument("--run-dir", default="runs/demo-text", help="a run whose 'data' stage has finished")
    ap.add_argument("--stages", default="ar,rad")
    ap.add_argument("--steps", type=int, default=3, help="batches per variant and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/bench/iu_text_levers.json")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)

    import torch

    from blockdistill.data import BlockCollator
    from examples.iu_text.config import load_text_config
    from examples.iu_text.data import Workspace
    from examples.iu_text.model import build_backbone, freeze_embeddings

    cfg = load_text_config(args.config, [f"run_dir={args.run_dir}", *args.overrides])
    ws = Workspace(cfg)
    tok = ws.tokenizer()
    samples = ws.samples("train")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    base = build_backbone(cfg.model, tok, seed=cfg.seed)

    rows = []
    for stage in args.stages.split(","):
        size = 1 if stage == "ar" else 8
        collate = BlockCollator(size, tok.eos_token_id, pad)
        batch_size = cfg.ar.batch_size if stage == "ar" else cfg.rad.batch_size
        plans = {v.name: _batches(samples, collate, batch_size, v.bucketing, args.steps * args.rounds + 1, cfg.seed)
                 for v in VARIANTS}
        times: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
        trainable: dict[str, int] = {}
        for r in range(args.rounds + 1):  # round 0 warms up every variant and is not kept
            for v in VARIANTS:
                model = copy.deepcopy(base)  # RAD's wrapper adds [MASK] to the embedding in place
                system = _system(stage, model, tok, cfg)
                if v.frozen:  # after the wrapper, which may replace the embedding, as the stages do
                    freeze_embeddings(getattr(system.net, "model", system.net))
                trainable[v.name] = sum(p.numel() for p in system.parameters() if p.requires_grad)
                lo = 0 if r == 0 else 1 + (r - 1) * args.steps
                chunk = plans[v.name][lo:lo + (1 if r == 0 else args.steps)]
                sec = _step_seconds(system, chunk, v.bf16)
                if r:
                    times[v.name].append(sec)
                    print(f"[{stage}] round {r}/{args.rounds} {v.name}: {sec:.2f} s/step", flush=True)
        ref = statistics.median(times[VARIANTS[0].name])
        for v in VARIANTS:
            sec = statistics.median(times[v.name])
            rows.append({"stage": stage, "variant": v.name, "bf16": v.bf16, "frozen": v.frozen,
                         "bucketing": v.bucketing, "seconds_per_step": sec, "examples_per_s": batch_size / sec,
                         "speedup_vs_fp32": ref / sec, "padding": _padding(plans[v.name][1:]),
                         "batch_size": batch_size, "trainable_params": trainable[v.name],
                         "rounds_s": times[v.name]})
    print()
    print_table(rows, ["stage", "variant", "seconds_per_step", "examples_per_s", "speedup_vs_fp32", "padding"])
    result = {"machine": machine_info(), "threads": threads, "torch_bf16_native": torch.backends.mkldnn.is_available(),
              "config": args.config, "steps": args.steps, "rounds": args.rounds, "rows": rows}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
