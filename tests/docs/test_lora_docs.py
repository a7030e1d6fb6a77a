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


def test_the_quality_comparison_is_the_recorded_run() -> None:
    """Every row and every ratio of 'When LoRA is enough' comes from the named lora_quality run."""
    text = DOC.read_text()
    _, result = _recorded("lora_quality")
    rows = {r["run"]: r for r in result["scripts"]["lora_quality"]["rows"]}
    assert set(rows) == {"full", "lora_same_lr", "lora_10x_lr"}
    labels = {"full": "full fine-tuning", "lora_same_lr": "LoRA rank 16, same lr",
              "lora_10x_lr": "LoRA rank 16, 10x lr"}
    for run, label in labels.items():
        r = rows[run]
        line = (f"| {label} | {r['lr']:.0e} | {r['trainable_params']:,} | {r['held_out_rad_loss_start']:.2f} → "
                f"{r['held_out_rad_loss_end']:.3f} | {r['exact_match']:.3f} | {r['train_s']:.0f} |")
        assert line in text, line
    full, same, ten = rows["full"], rows["lora_same_lr"], rows["lora_10x_lr"]
    assert f"{same['held_out_rad_loss_end'] / full['held_out_rad_loss_end']:.1f}x the full run's" in text
    assert f"at {ten['train_s'] / full['train_s']:.2f}x the wall time" in text
    # The conclusions drawn in the text still follow from the numbers.
    assert same["exact_match"] == 0 and "decodes none of the held-out numbers" in text
    assert full["held_out_rad_loss_end"] < ten["held_out_rad_loss_end"] < same["held_out_rad_loss_end"]
    load = result["load_avg_1min"]
    assert f"load average {load['start']:.2f} before the run, {load['end']:.2f} after it" in text
