"""Shared pieces of the reliability tests: tiny inputs on disk, the CLI in a subprocess, CSV logs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from blockdistill import BlockDiffusionLM
from blockdistill.models.provenance import mark_trained
from blockdistill.testing import tiny_qwen2, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}


def write_text_data(tmp_path: Path, n: int = 16) -> tuple[Path, Path]:
    """A tiny tokenizer and ``n`` prompt/response lines of its words."""
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    g = torch.Generator().manual_seed(0)
    with open(tmp_path / "train.jsonl", "w") as f:
        for i in range(n):
            k = int(torch.randint(3, 9, (1,), generator=g))
            p = " ".join(f"t{int(t)}" for t in torch.randint(0, 80, (k,), generator=g))
            r = " ".join(f"t{int(t)}" for t in torch.randint(0, 80, (6,), generator=g))
            f.write(json.dumps({"id": f"q{i}", "prompt": p, "response": r}) + "\n")
    return tmp_path / "tok", tmp_path / "train.jsonl"


def write_teacher(tmp_path: Path) -> Path:
    tok = tiny_tokenizer()
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tok, block_size=4)
    mark_trained(bd, "rad")  # stands in for a RAD-trained teacher (collect refuses an untrained one)
    bd.save_pretrained(tmp_path / "teacher", tokenizer=tok)
    return tmp_path / "teacher"


def run_faulty(what: str, args: list[str], *, kill_at: int | None = None, nan_at: int | None = None,
               nan_rank: int | None = None, kill_after_batches: int | None = None, fsdp2: bool = False,
               timeout: int = 300) -> subprocess.CompletedProcess:
    """``tests.reliability.runner`` in a subprocess (the fault injected there, for real)."""
    flags = [] if kill_after_batches is None else ["--kill-after-batches", str(kill_after_batches)]
    flags += ["--fsdp2"] if fsdp2 else []
    if kill_at is not None:
        flags += ["--kill-at", str(kill_at)]
    if nan_at is not None:
        flags += ["--nan-at", str(nan_at)]
    if nan_rank is not None:
        flags += ["--nan-rank", str(nan_rank)]
    return subprocess.run([sys.executable, "-m", "tests.reliability.runner", *flags, what, "--", *args],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, **ENV}, timeout=timeout)


def losses(metrics_csv: Path) -> dict[int, float]:
    """``step -> train/loss`` of a CSV log; a step logged twice is an error."""
    out: dict[int, float] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                step = int(row["step"])
                assert step not in out, f"step {step} logged twice in {metrics_csv}"
                out[step] = float(row["train/loss"])
    return out


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
