"""A GGUF conversion killed mid-way (a real ``kill -9`` of the process writing the cache) leaves
nothing that a later load uses; the next load converts again and gets a working model.

The subprocess converts the bundled SmolLM2 GGUF into a fresh cache root; it is killed while
the safetensors file is being written into the temporary directory (the slowest moment to be
caught in: after the ~20 s dequantization, before the atomic rename). Slow: two conversions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from blockdistill.models.gguf import cache_matches, converted_dir, gguf_key, smollm2_gguf

ROOT = Path(__file__).resolve().parents[2]
CONVERT = "import sys; from blockdistill.models.gguf import converted_dir; converted_dir('smollm2', root=sys.argv[1])"


@pytest.mark.slow
def test_a_conversion_killed_while_writing_leaves_no_usable_cache(tmp_path):
    gguf = smollm2_gguf()
    key = gguf_key(gguf)
    target = tmp_path / "gguf" / f"{gguf.stem}-{key['sha256'][:12]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CONVERT, str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    caught = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        partial = [p for p in (tmp_path / "gguf").glob(f".{target.name}.*") if (p / "model.safetensors").exists()]
        if partial:
            os.kill(proc.pid, signal.SIGKILL)
            caught = partial[0]
            break
        time.sleep(0.005)
    proc.wait()
    assert caught is not None, f"the conversion ended (rc {proc.returncode}) before it was caught writing"
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists() and not cache_matches(target, key)  # nothing under the cache's name

    started = time.monotonic()
    again = converted_dir("smollm2", root=tmp_path)  # converts again (the partial directory is not used)
    assert again == target and cache_matches(target, key)
    assert time.monotonic() - started > 2  # a real conversion, not a cache hit

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 504, 3458, 282]])).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == model.config.vocab_size
    assert converted_dir("smollm2", root=tmp_path) == target  # and now it is a cache hit
