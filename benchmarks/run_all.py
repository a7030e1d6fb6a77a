"""Run every benchmark script, one after another, and combine their results.

    python benchmarks/run_all.py [--quick] [--out-dir benchmarks/results] [--only decode,attention_backends]

Runs each ``benchmarks/*.py`` that is a benchmark (everything but ``_common.py``, this file,
``summarize.py`` and ``iu_text_levers.py``, which times the text example's own run and is run by hand; ``decode``, ``train_rad_vs_dup`` and ``attention_backends`` first, then the others
such as ``lora``), and the
:data:`VARIANTS` (``decode_shift``: ``decode.py --shift --batches 1``), each as its own
process with ``--out <tmp>.json`` (and ``--quick``), ``OMP_WAIT_POLICY=PASSIVE`` and ``src`` on
``PYTHONPATH``. Peak memory is in ``train_rad_vs_dup`` (one training step per layout) and
``attention_backends`` (one attention op per backend) rows, and in ``lora`` (one RAD step with
AdamW: full fine-tuning, LoRA, LoRA without the trainable ``[MASK]`` row). Then writes, in ``--out-dir``:

- ``<date>-<machine>[-quick].json``: ``{"created", "quick", "machine", "scripts": {name: its JSON},
  "failures": {name: {"returncode", "tail"}}}``;
- ``<date>-<machine>[-quick].md``: the markdown summary (``summarize.render_run``);
- ``<date>-<machine>[-quick].png``: one plot panel per script.

A failing script does not stop the others; the exit code is 1 if any failed. ``make bench``
runs this; ``make bench-quick`` adds ``--quick`` (a few minutes on 2 CPU cores). Run it alone:
timings beside another CPU-heavy process are meaningless.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import write_json  # noqa: E402
from summarize import plot_run, render_run  # noqa: E402

ORDER = ("decode", "decode_shift", "train_rad_vs_dup", "attention_backends")
NOT_BENCHMARKS = {"_common", "run_all", "summarize",
                  # needs a finished `data` stage of examples/iu_text and the SmolLM2 weights: run by hand
                  "iu_text_levers"}
VARIANTS: dict[str, tuple[str, list[str]]] = {
    # How AR-converted models (ECHO included) decode: the block write pass runs the LM head on one row.
    "decode_shift": ("decode", ["--shift", "--batches", "1"]),
    # The real SmolLM2-135M-Instruct (issue 16): L=8, batch 1, shift, fused against AR and its limit.
    "decode_smollm2": ("decode", ["--model", "smollm2", "--shift", "--blocks", "8", "--batches", "1"]),
}
"""Further runs of a script with other arguments, each recorded under its own name."""


def discover(only: list[str] | None = None) -> list[str]:
    """Benchmark script names in run order (known ones first, then any new ``*.py``)."""
    found = sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS)
    found += [name for name, (script, _) in VARIANTS.items() if script in found]
    names = [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"run_all: unknown benchmark(s) {unknown}; available: {names}")
        names = [n for n in names if n in only]
    return names


def machine_slug(machine: dict) -> str:
    """A short file-name-safe name for the machine, e.g. ``gpu-nvidia-h200`` or ``cpu-intel-xeon-2c``."""
    if machine.get("gpu"):
        name, prefix = machine["gpu"], "gpu"
        count = machine.get("gpu_count", 1)
        suffix = f"-x{count}" if count and count > 1 else ""
    else:
        name, prefix, suffix = machine.get("cpu", "unknown"), "cpu", f"-{machine.get('cpu_count', '?')}c"
    name = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\bwith\b.*$", " ", name)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{prefix}-{slug[:40].strip('-')}{suffix}"


def run_script(name: str, out: Path, quick: bool, timeout: float | None) -> tuple[int, str]:
    """Run one benchmark, echoing its output; return ``(returncode, last lines of output)``."""
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    script, extra = VARIANTS.get(name, (name, []))
    cmd = [sys.executable, str(HERE / f"{script}.py"), "--out", str(out), *extra] + (["--quick"] if quick else [])
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=60)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        for line in proc.stdout:
            print(f"  {line}", end="", flush=True)
            tail.append(line.rstrip("\n"))
        code = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if killed.is_set():
        tail.append(f"run_all: killed after {timeout:.0f} s (--timeout)")
    print(f"=== {name}: exit code {code} after {time.monotonic() - start:.1f} s", flush=True)
    return code, "\n".join(tail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every script with --quick (smoke sizes)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--only", default=None, help="comma-separated subset of the benchmark names")
    ap.add_argument("--note", action="append", default=[],
                    help="a sentence about the run recorded in the result and its page (e.g. other jobs running)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per script before it is killed (default: 240 with --quick, none otherwise)")
    args = ap.parse_args(argv)
    names = discover(args.only.split(",") if args.only else None)
    timeout = args.timeout if args.timeout is not None else (240.0 if args.quick else None)

    scripts, failures, machine = {}, {}, None
    started = time.monotonic()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            code, tail = run_script(name, out, args.quick, timeout)
            if code == 0 and out.is_file():
                data = json.loads(out.read_text())
                scripts[name] = data
                machine = machine or data.get("machine")
            else:
                failures[name] = {"returncode": code, "tail": tail}
                if out.is_file():          # e.g. a disagreement check failed after writing its rows
                    scripts[name] = json.loads(out.read_text())
    if machine is None:
        from _common import machine_info

        machine = machine_info()
    created = dt.datetime.now(dt.timezone.utc)
    stem = f"{created:%Y-%m-%d}-{machine_slug(machine)}{'-quick' if args.quick else ''}"
    if args.only:  # a partial run never overwrites (or is mistaken for) the day's whole run
        stem += "-" + "-".join(names)
    # Other processes skew every timing: the 1-minute load average before and after says how busy it was.
    load = {"start": load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    result = {"created": created.isoformat(timespec="seconds"), "quick": args.quick, "machine": machine,
              "wall_s": time.monotonic() - started, "load_avg_1min": load, "scripts": scripts,
              "failures": failures, **({"notes": args.note} if args.note else {})}
    write_json(args.out_dir / f"{stem}.json", result)
    result["_file"] = f"{stem}.json"
    png = plot_run(result, args.out_dir / f"{stem}.png")
    md = render_run(result)
    if png is not None:
        md += f"\n![benchmark plot]({png.name})\n"
    (args.out_dir / f"{stem}.md").write_text(md)
    print(f"wrote {args.out_dir / f'{stem}.md'}" + (f" and {png}" if png else ""))
    print(f"all benchmarks: {time.monotonic() - started:.1f} s, {len(scripts)} with results, "
          f"{len(failures)} failed{': ' + ', '.join(failures) if failures else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
