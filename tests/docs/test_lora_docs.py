"""The numbers docs/lora.md states are the recorded ones (benchmarks/results/), not typed."""

from __future__ import annotations

import json
import re

from tests.docs.helpers import ROOT

DOC = ROOT / "docs" / "lora.md"


def _recorded(script: str) -> tuple[str, dict]:
    """The result file docs/lora.md names for ``script`` and that script's JSON in it."""
    text = DOC.read_text()
    names = set(re.findall(r"benchmarks/results/([\w.-]+\.json)", text))
    for name in sorted(names):
        data = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
        if script in data["scripts"]:
            return name, data
    raise AssertionError(f"docs/lora.md names no recorded result of {script} (it names {sorted(names)})")


def test_the_cost_numbers_are_the_recorded_benchmark() -> None:
    text = DOC.read_text()
    _, result = _recorded("lora")
    data = result["scripts"]["lora"]
    rows = {r["mode"]: r for r in data["rows"]}
    s = data["summary"]
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    for mode, label in (("full", "full fine-tuning"), ("lora", "LoRA (adapters + `[MASK]` row)"),
                        ("lora_adapters_only", "LoRA adapters only, `[MASK]` row frozen")):
        r = rows[mode]
        line = (f"| {label} | {r['trainable_params']:,} ({100 * r['trainable_fraction']:.{0 if mode == 'full' else 2}f}%) "
                f"| {r['wall_s']:.1f} | {gib(r['peak_mem_bytes'])} |")
        assert line in text, line
    assert f"**{s['lora_over_full_peak_mem_ratio']:.3f}x**" in text
    assert f"**{s['lora_over_full_time_ratio']:.3f}x**" in text
    assert f"**{s['token_rows_time_ratio']:.2f}x**" in text
    assert f"**{s['token_rows_extra_peak_mem_bytes'] / 2**20:.0f} MiB**" in text
    assert f"{s['embedding_copy_bytes'] / 2**20:.0f} MiB here" in text
    load = result["load_avg_1min"]
    assert f"{load['start']:.2f} before the run, {load['end']:.2f} after it" in text
