"""Helpers shared by the benchmark scripts: machine description, timing, a plain-text table
and atomic JSON output. Scripts import it as ``from _common import ...`` (run them from the
repository root: ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from blockdistill.utils.machine import machine_info  # noqa: E402  (one description of a machine, shared with reports)

__all__ = ["machine_info", "median_time", "print_table", "set_threads", "sync", "write_json"]


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` intra-op threads (default: every core this process may use). Call before
    the first torch op. ``OMP_WAIT_POLICY=PASSIVE`` should be in the environment before torch is
    imported; we set it when it is missing, which helps only if torch is not imported yet."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def sync(device: Any = None) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    import torch

    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: Any = None) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rss_peak_growth(fn: Callable[[], Any], interval_s: float = 0.002) -> int:
    """Bytes the process's resident set grew over its value before ``fn()``, at its peak.

    RSS is sampled every ``interval_s`` from ``/proc/self/statm`` by a watcher thread while ``fn``
    runs (Linux only). Run it in a fresh process: memory freed by earlier work would be reused
    and hide the growth.
    """
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, done = rss(), [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(interval_s)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return max(0, peak[0] - base)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` (dicts) as an aligned text table of ``columns`` (missing values blank)."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {path}")
    return path
