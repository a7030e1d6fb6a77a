"""Attention backends on the RAD mask: SDPA (dense mask), flex_attention (cached block mask),
xformers (GPU only): do they agree, how fast are they, how much memory do they take.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/attention_backends.py [--quick] [--out PATH]
        [--lengths 1024,2048] [--compile auto|on|off] [--repeats K]

One attention op (batch 1, 8 heads of 64; bfloat16 on a GPU, float32 on a CPU) over a RAD
training sequence ``[clean stream (n) | noisy copy of s..n-1]`` whose prompt is 7/8 of the clean
stream. The masks come from the library: ``blockdistill.models.attention.render_mask`` (dense boolean
for SDPA, additive for xformers, whose kernel is ``blockdistill.models.attention``'s own) and
``blockdistill.layout.flex_block_mask`` (built once per shape and reused: the cached block mask).
Every backend is compared with SDPA on the same inputs. flex_attention runs compiled when
``torch.compile`` works here and uncompiled (say so in ``mode``) when it does not. Lengths are
RAD slot counts, 1k-8k by default (``--quick``: 256 and 512). Run it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import types
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, median_time, print_table, set_threads, sync, write_json  # noqa: E402

from blockdistill.layout import dense_mask, flex_block_mask, rad_layout  # noqa: E402
from blockdistill.models.attention import render_mask  # noqa: E402

LENGTHS = (1024, 2048, 4096, 8192)
QUICK_LENGTHS = (256, 512)
BLOCK = 8
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}
"""Max |out - out_sdpa| for two backends to count as agreeing (outputs are O(1))."""


def rad_shape(slots: int, block: int = BLOCK) -> tuple[int, int, int]:
    """``(P, R, n)`` of a RAD sequence of about ``slots`` tokens with the prompt 7/8 of the
    clean stream (ECHO-like: a long image + instruction prompt, a short report)."""
    n = max(2 * block, round(slots / (1 + 1 / 8) / block) * block)
    p = (7 * n) // 8
    return p, n - p - 1, n


class PeakMemory:
    """Peak memory added by the code inside ``with``: CUDA allocator peak on a GPU, sampled
    resident-set growth (``/proc/self/statm``) on a CPU."""

    def __init__(self, device: str) -> None:
        self.device, self.peak = device, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            sync(self.device)
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self._top = self.base
            self._done = threading.Event()

            def watch() -> None:
                while not self._done.is_set():
                    self._top = max(self._top, self._rss())
                    time.sleep(0.001)

            self._thread = threading.Thread(target=watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._done.set()
            self._thread.join()
            self.peak = max(self._top, self._rss()) - self.base


def _mask_bytes(mask) -> int:
    if isinstance(mask, torch.Tensor):
        return mask.numel() * mask.element_size()
    parts = [getattr(mask, a, None) for a in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                                              "full_kv_indices", "q_num_blocks", "q_indices",
                                              "full_q_num_blocks", "full_q_indices")]
    return sum(t.numel() * t.element_size() for t in parts if isinstance(t, torch.Tensor))


def _flex(compile_mode: str):
    """``(flex_attention callable, compile flag, mode text)``: compiled when asked and it works."""
    from torch.nn.attention.flex_attention import flex_attention

    if compile_mode == "off":
        return flex_attention, False, "uncompiled (--compile off)"
    return torch.compile(flex_attention, dynamic=False), True, "compiled"


def bench_length(slots: int, args, device: str, dtype: torch.dtype, flex_state: dict) -> list[dict]:
    p, r, n = rad_shape(slots)
    lay = rad_layout(torch.tensor([p], device=device), torch.tensor([n], device=device), BLOCK)
    t = lay.num_slots
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, t, args.head_dim, generator=g).to(device=device, dtype=dtype)
               for _ in range(3))
    base = dict(slots=t, P=p, R=r, n=n, L=BLOCK, heads=args.heads, head_dim=args.head_dim, device=device,
                dtype=str(dtype).replace("torch.", ""))
    density = float(dense_mask(lay).float().mean())
    rows = []

    # SDPA with the dense boolean mask (the reference).
    t0 = time.perf_counter()
    dense = render_mask(lay, "sdpa", dtype)
    sync(device)
    build = time.perf_counter() - t0
    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    ref = sdpa()
    with PeakMemory(device) as mem:
        sdpa()
    rows.append(dict(base, backend="sdpa", mode="dense bool mask", density=density, mask_build_s=build,
                     mask_bytes=_mask_bytes(dense), compile_s=0.0,
                     attn_s=median_time(sdpa, args.repeats, device=device), peak_mem_bytes=mem.peak,
                     max_abs_diff_vs_sdpa=0.0, agrees=True))

    # flex_attention with a block mask built once for this shape and reused.
    fn, compiled, mode = flex_state["fn"], flex_state["compiled"], flex_state["mode"]
    try:
        block_mask = flex_block_mask(lay, compile=flex_state["compile_mask"])   # compiles once per shape
    except Exception as e:  # noqa: BLE001 - compiled create_block_mask may not build here
        flex_state["compile_mask"] = False
        flex_state["notes"].append(f"compiled create_block_mask failed ({type(e).__name__}); built uncompiled")
    t0 = time.perf_counter()
    block_mask = flex_block_mask(lay, compile=flex_state["compile_mask"])
    sync(device)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        out = fn(q, k, v, block_mask=block_mask)
        sync(device)
    except Exception as e:  # noqa: BLE001 - e.g. inductor cannot build the CPU kernel
        if not compiled:
            raise
        from torch.nn.attention.flex_attention import flex_attention

        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else type(e).__name__
        print(f"torch.compile(flex_attention) failed on {device}: {reason}; running flex_attention uncompiled",
              flush=True)
        flex_state.update(fn=flex_attention, compiled=False, mode=f"uncompiled (compile failed: {reason})")
        flex_state["notes"].append(f"flex_attention uncompiled on {device}: torch.compile failed ({reason})")
        fn, mode = flex_attention, flex_state["mode"]
        t0 = time.perf_counter()
        out = fn(q, k, v, block_mask=block_mask)
        sync(device)
    first_call = time.perf_counter() - t0
    def flex():
        return fn(q, k, v, block_mask=block_mask)
    with PeakMemory(device) as mem:
        flex()
    diff = float((out.float() - ref.float()).abs().max())
    attn_s = median_time(flex, args.repeats, device=device)
    rows.append(dict(base, backend="flex_attention", mode=mode, density=density, mask_build_s=build,
                     mask_bytes=_mask_bytes(block_mask),
                     compile_s=max(first_call - attn_s, 0.0) if flex_state["compiled"] else 0.0,
                     attn_s=attn_s, peak_mem_bytes=mem.peak, max_abs_diff_vs_sdpa=diff,
                     agrees=diff <= TOLERANCE[dtype]))

    # xformers: the library's own kernel wrapper, with the additive mask, on a GPU only.
    if device.startswith("cuda") and flex_state["xformers"]:
        from blockdistill.models.attention import _xformers_attention

        t0 = time.perf_counter()
        bias = render_mask(lay, "xformers", dtype)
        sync(device)
        build = time.perf_counter() - t0
        module = types.SimpleNamespace(training=False)
        def xf():
            return _xformers_attention(module, q, k, v, bias)[0]
        out = xf().transpose(1, 2)
        with PeakMemory(device) as mem:
            xf()
        diff = float((out.float() - ref.float()).abs().max())
        rows.append(dict(base, backend="xformers", mode="memory_efficient_attention, additive mask",
                         density=density, mask_build_s=build, mask_bytes=_mask_bytes(bias), compile_s=0.0,
                         attn_s=median_time(xf, args.repeats, device=device), peak_mem_bytes=mem.peak,
                         max_abs_diff_vs_sdpa=diff, agrees=diff <= TOLERANCE[dtype]))
    for row in rows:
        row["vs_sdpa"] = rows[0]["attn_s"] / row["attn_s"]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/attention_backends.json")
    ap.add_argument("--quick", action="store_true", help=f"lengths {QUICK_LENGTHS}: well under a minute")
    ap.add_argument("--lengths", default=None, help="comma-separated RAD slot counts (overrides --quick)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                    help="torch.compile flex_attention and create_block_mask (auto: try, fall back to uncompiled)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    device = args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths
               else list(QUICK_LENGTHS if args.quick else LENGTHS))
    args.repeats = args.repeats or (3 if args.quick else 5)
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch.nn.attention.flex_attention")

    fn, compiled, mode = _flex(args.compile)
    try:
        import xformers.ops  # noqa: F401

        has_xformers = True
    except ImportError:
        has_xformers = False
    state = dict(fn=fn, compiled=compiled, mode=mode, compile_mask=compiled, xformers=has_xformers, notes=[])
    if args.compile == "on":
        state["notes"].append("--compile on: a compile failure falls back like auto, and is reported")
    if not device.startswith("cuda"):
        state["notes"].append("xformers skipped: it has no CPU kernels (GPU-only extra)")
    elif not has_xformers:
        state["notes"].append("xformers skipped: not installed (pip install 'blockdistill[xformers]')")

    rows = []
    t_start = time.perf_counter()
    for slots in lengths:
        rows += bench_length(slots, args, device, dtype, state)
        print(f"[{time.perf_counter() - t_start:6.1f}s] {rows[-1]['slots']} slots done", flush=True)
    print()
    print_table(rows, ["slots", "backend", "mode", "density", "mask_build_s", "compile_s", "attn_s", "vs_sdpa",
                       "mask_bytes", "peak_mem_bytes", "max_abs_diff_vs_sdpa", "agrees"])
    for note in dict.fromkeys(state["notes"]):
        print("note:", note)
    config = dict(lengths=lengths, block_size=BLOCK, heads=args.heads, head_dim=args.head_dim,
                  repeats=args.repeats, device=device, dtype=str(dtype), threads=threads, quick=args.quick,
                  compile=args.compile, tolerance=TOLERANCE[dtype])
    write_json(args.out, {"machine": machine_info(), "config": config, "rows": rows,
                          "notes": list(dict.fromkeys(state["notes"]))})
    bad = [r for r in rows if not r["agrees"]]
    if bad:
        print(f"ERROR: {len(bad)} backend row(s) disagree with SDPA beyond {TOLERANCE[dtype]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
