"""The benchmark runner, its attention-backend script and the summariser, at the smallest sizes.

Real timings are not checked (they belong to ``make bench`` on a quiet machine); what is checked
is that the scripts run, agree across backends, fall back honestly when ``torch.compile`` fails,
and that results turn into the documented JSON, markdown and plot without inventing numbers.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.docs.helpers import ROOT, explain, run_python

sys.path.insert(0, str(ROOT / "benchmarks"))

import summarize  # noqa: E402


def test_attention_backends_smallest_size(tmp_path) -> None:
    out = tmp_path / "attn.json"
    proc, wall = run_python(["benchmarks/attention_backends.py", "--quick", "--lengths", "64", "--compile", "off",
                             "--threads", "1", "--repeats", "1", "--out", str(out)], timeout=120)
    assert proc.returncode == 0, explain(proc)
    data = json.loads(out.read_text())
    assert {"machine", "config", "rows", "notes"} <= set(data)
    rows = {r["backend"]: r for r in data["rows"]}
    assert {"sdpa", "flex_attention"} <= set(rows)
    assert all(r["agrees"] for r in data["rows"]), data["rows"]
    assert rows["flex_attention"]["mode"] == "uncompiled (--compile off)"
    assert rows["sdpa"]["slots"] == rows["flex_attention"]["slots"] >= 64
    assert all(r["attn_s"] > 0 and r["mask_bytes"] > 0 for r in data["rows"])
    if not data["machine"]["cuda"]:
        assert any("xformers skipped" in n for n in data["notes"])
    print(f"attention_backends --lengths 64: {wall:.1f} s")


def test_decode_smallest_size_writes_one_row_per_cell_and_paired_limits(tmp_path) -> None:
    """decode.py end to end at its smallest size: the documented row schema, the forward counts
    each sampler must take, and limits built from per-round (paired) measurements."""
    out = tmp_path / "decode.json"
    proc, wall = run_python(["benchmarks/decode.py", "--quick", "--models", "small", "--blocks", "2,4",
                             "--batches", "1,2", "--repeats", "2", "--shift", "--threads", "1",
                             "--out", str(out)], timeout=180)
    assert proc.returncode == 0, explain(proc)
    data = json.loads(out.read_text())
    new = 32   # --quick: 64-token prompts (whole blocks at L in {2, 4}), 32 forced new tokens
    rows = {(r["L"], r["batch"], r["method"]): r for r in data["rows"]}
    assert set(rows) == {(L, b, m) for L in (2, 4) for b in (1, 2)
                         for m in ("ar", "multistep", "onestep_unfused", "onestep_fused")}
    for (L, b, m), r in rows.items():
        assert {"model", "L", "batch", "method", "tokens_per_s", "tokens_per_s_decode", "nfe", "tpf"} <= set(r)
        assert r["model"] == "small" and r["generated_tokens"] == b * new and r["tokens_per_s"] > 0
        if m == "ar":
            assert r["nfe"] == new    # the prefill predicts the first token
        elif m == "onestep_fused":
            assert r["nfe"] == 1 + new // L and r["tpf"] == L
        elif m == "onestep_unfused":   # a denoise and a write pass per block; the last block is never written
            assert r["nfe"] == 1 + 2 * (new // L) - 1
    costs = {(c["L"], c["tokens"], c["logit_rows"]) for c in data["forward_cost"]}
    assert costs == {(L, n, k) for L in (2, 4) for n, k in ((1, 1), (L, L), (2 * L, L), (L, 1))}
    for lim in data["limits"]:
        assert lim["rounds"] == 2 and len(lim["fraction_of_unfused_limit_rounds"]) == 2
        assert lim["fused_vs_unfused_limit"] > 0 and lim["fused_vs_ar_limit"] > 0
        assert min(lim["fraction_of_unfused_limit_rounds"]) <= lim["fraction_of_unfused_limit"] \
            <= max(lim["fraction_of_unfused_limit_rounds"])
    print(f"decode --quick --models small --blocks 2,4 --batches 1,2 --repeats 2: {wall:.1f} s")


def test_decode_measures_a_saved_model_with_the_same_rows(tmp_path) -> None:
    """``decode.py --model PATH``: a tiny saved blockdistill model (shift, as converted from AR)
    goes through the same cells, forward counts and limits as the random shapes, under its
    directory's name; a path without a model is refused by name."""
    from blockdistill import BlockDiffusionLM
    from blockdistill.testing import tiny_qwen2, tiny_tokenizer

    saved = tmp_path / "tiny-saved"
    BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4, shift=True).save_pretrained(
        saved, tokenizer=tiny_tokenizer())
    out = tmp_path / "decode.json"
    proc, wall = run_python(["benchmarks/decode.py", "--model", str(saved), "--quick", "--blocks", "2",
                             "--batches", "1", "--repeats", "1", "--threads", "1", "--out", str(out)], timeout=180)
    assert proc.returncode == 0, explain(proc)
    data = json.loads(out.read_text())
    new = 32
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"ar", "multistep", "onestep_unfused", "onestep_fused"}
    assert {r["model"] for r in data["rows"]} == {"tiny-saved"} and {r["L"] for r in data["rows"]} == {2}
    assert rows["ar"]["nfe"] == new and rows["onestep_fused"]["nfe"] == 1 + new // 2
    assert data["config"]["shift"] is True and data["config"]["model"] == str(saved)  # the model's own shift
    assert data["config"]["models"]["tiny-saved"]["layers"] == 2
    (lim,) = data["limits"]
    assert lim["model"] == "tiny-saved" and lim["fused_vs_ar_limit"] > 0
    assert "fused_vs_ar" in proc.stdout and "tiny-saved" in proc.stdout  # the printed table
    bad = run_python(["benchmarks/decode.py", "--model", str(tmp_path), "--quick", "--out", str(out)], timeout=60)[0]
    assert bad.returncode != 0 and "no config.json there" in bad.stderr + bad.stdout
    print(f"decode --model tiny --quick --blocks 2 --batches 1: {wall:.1f} s")


def test_attention_backends_reports_a_compile_failure(tmp_path, monkeypatch) -> None:
    """Guards against a silent fallback: when torch.compile cannot build flex_attention, the
    script runs it uncompiled and says so in the rows and the notes."""
    import attention_backends
    import torch

    real_compile = torch.compile

    def broken_compile(fn=None, *args, **kwargs):
        if "backend" in kwargs:   # torch internals (uncompiled flex_attention) compile with a backend
            return real_compile(fn, *args, **kwargs)

        def run(*a, **k):
            raise RuntimeError("inductor C++ compile error (simulated)")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    threads = torch.get_num_threads()
    try:
        code = attention_backends.main(["--lengths", "64", "--repeats", "1", "--threads", "1",
                                        "--out", str(tmp_path / "a.json")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    data = json.loads((tmp_path / "a.json").read_text())
    flex = next(r for r in data["rows"] if r["backend"] == "flex_attention")
    assert flex["mode"].startswith("uncompiled (compile failed: RuntimeError")
    assert flex["agrees"]
    assert any("torch.compile failed" in n for n in data["notes"])
    assert any("create_block_mask failed" in n for n in data["notes"])


def _fake_result(quick: bool = True, gpu: str | None = None) -> dict:
    machine = {"python": "3.11", "torch": "2.13.0", "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2,
               "cuda": gpu is not None}
    if gpu:
        machine.update(gpu=gpu, gpu_count=1)
    return {
        "created": "2026-01-01T00:00:00+00:00", "quick": quick, "machine": machine, "failures": {},
        "scripts": {
            "decode": {"machine": machine, "config": {"prompt": 64}, "rows": [
                {"model": "small", "L": 4, "batch": 1, "method": m, "tokens_per_s": t, "tokens_per_s_decode": t,
                 "tpf": 1.0, "nfe": 9, "vs_ar": t / 100.0} for m, t in (("ar", 100.0), ("onestep_fused", 250.0))],
                "limits": [{"model": "small", "L": 4, "fused_vs_ar": 2.5, "fused_vs_ar_limit": 3.0}]},
            "train_rad_vs_dup": {"machine": machine, "rows": [
                {"layout": "rad", "tokens": 656, "wall_s": 0.2, "peak_mem_bytes": 1000},
                {"layout": "full_dup", "tokens": 1168, "wall_s": 0.3, "peak_mem_bytes": 2000}],
                "summary": {"speedup_paired_median": 1.5}},
            "attention_backends": {"machine": machine, "rows": [
                {"slots": s, "backend": b, "mode": "m", "attn_s": 0.001 * s / 64, "agrees": True}
                for s in (64, 128) for b in ("sdpa", "flex_attention")], "notes": ["xformers skipped: test"]},
            "lora": {"machine": machine, "rows": [
                {"mode": m, "rank": k, "trainable_params": n, "wall_s": t, "peak_mem_bytes": b}
                for m, k, n, t, b in (("full", 0, 1000, 0.5, 3 * 2**30), ("lora", 16, 10, 0.25, 2**30))],
                "summary": {"lora_over_full_time_ratio": 0.5}},
            "lora_quality": {"machine": machine, "rows": [
                {"run": r, "steps": 30, "held_out_rad_loss_end": v, "exact_match": e, "curve": []}
                for r, v, e in (("full", 1.0, 0.5), ("lora_10x_lr", 1.2, 0.4))]},
        },
    }


def _lora_expected_counts(hidden: int, layers: int, heads: int, kv: int, inter: int, vocab: int, rank: int):
    """Parameters of the benchmark's Qwen2 and of its rank-``rank`` adapters, counted by hand."""
    head_dim = hidden // heads
    shapes = [(hidden, hidden), (hidden, kv * head_dim), (hidden, kv * head_dim), (hidden, hidden),
              (hidden, inter), (hidden, inter), (inter, hidden)]          # q k v o gate up down: (in, out)
    adapters = layers * sum(rank * (i + o) for i, o in shapes)
    attn = 2 * hidden * hidden + 2 * hidden * kv * head_dim + hidden + 2 * kv * head_dim   # + q/k/v biases
    per_layer = attn + 3 * hidden * inter + 2 * hidden                                       # + two norms
    total = (vocab + 1) * hidden + layers * per_layer + hidden                              # tied head, final norm
    return total, adapters


def test_lora_benchmark_smallest_size_counts_and_times_each_mode(tmp_path) -> None:
    """benchmarks/lora.py --quick end to end: one row per mode, the trainable weights of each mode
    exactly as counted from the shape (LoRA: the adapters plus the one [MASK] row of the tied
    embedding; adapters only: without it), positive times and memory, ratios from the rows."""
    out = tmp_path / "lora.json"
    proc, wall = run_python(["benchmarks/lora.py", "--quick", "--out", str(out)], timeout=240)
    assert proc.returncode == 0, explain(proc)
    data = json.loads(out.read_text())
    rows = {r["mode"]: r for r in data["rows"]}
    assert list(rows) == ["full", "lora", "lora_adapters_only"]
    cfg = data["config"]
    total, adapters = _lora_expected_counts(cfg["hidden"], cfg["layers"], cfg["heads"], cfg["kv"], cfg["inter"],
                                            cfg["vocab"], cfg["rank"])
    assert rows["full"]["trainable_params"] == rows["full"]["total_params"] == total
    assert rows["lora"]["trainable_params"] == adapters + cfg["hidden"]
    assert rows["lora_adapters_only"]["trainable_params"] == adapters
    assert all(r["wall_s"] > 0 and r["peak_mem_bytes"] > 0 for r in rows.values())
    s = data["summary"]
    assert s["lora_over_full_peak_mem_ratio"] == pytest.approx(rows["lora"]["peak_mem_bytes"]
                                                               / rows["full"]["peak_mem_bytes"])
    assert s["embedding_copy_bytes"] == 4 * (cfg["vocab"] + 1) * cfg["hidden"]
    assert s["lora_over_full_time_ratio"] > 0 and s["token_rows_time_ratio"] > 0
    print(f"lora --quick: {wall:.1f} s")


def test_lora_quality_task_spells_numbers_and_splits_them_apart() -> None:
    import lora_quality

    assert [lora_quality.words(n) for n in (101, 110, 115, 120, 347, 900, 999)] == [
        "one hundred one", "one hundred ten", "one hundred fifteen", "one hundred twenty",
        "three hundred forty-seven", "nine hundred", "nine hundred ninety-nine"]
    train, held = lora_quality.numbers(64, 16)
    assert len(set(train)) == 64 and len(set(held)) == 16 and not set(train) & set(held)
    assert all(101 <= n <= 999 for n in train + held)


def test_a_machine_that_got_busy_during_the_run_is_flagged() -> None:
    """The load before a run can be low and the one after it high (others started meanwhile):
    either one over half the cores marks the timings as skewed."""
    quiet = {**_fake_result(quick=False), "_file": "q.json", "load_avg_1min": {"start": 0.2, "end": 0.4}}
    busy = {**quiet, "load_avg_1min": {"start": 0.2, "end": 7.3}}
    assert "skewed" not in summarize.render_run(quiet)
    text = summarize.render_run(busy)
    assert "before the run: 0.20, after it: 7.30 on 2 cores (other processes were running" in text


def test_a_run_of_one_script_neither_heads_the_page_nor_feeds_the_readme() -> None:
    """``run_all.py --only lora`` writes a full (not quick) result holding one script: the README
    and the page's "Latest full run" keep the last whole run; the partial one is shown after it."""
    whole = _fake_result(quick=False)
    whole["_file"] = "2026-01-01-cpu-test-2c.json"
    part = {**_fake_result(quick=False), "created": "2026-01-05T00:00:00+00:00", "_file": "2026-01-05-lora.json"}
    part["scripts"] = {"lora": whole["scripts"]["lora"]}
    assert summarize.latest_full([whole, part]) is whole
    text = summarize.render_docs([whole, part])
    head, later = text.split("## Later run of `lora`")
    assert "Run `2026-01-01-cpu-test-2c.json`" in head and "onestep_fused" in head
    assert "Run `2026-01-05-lora.json`" in later and "| full | 0 | 1000 |" in later


def test_summarize_says_plainly_when_there_is_no_gpu_and_no_result() -> None:
    text = summarize.render_docs([])
    assert "No GPU numbers yet: no GPU machine was available" in text
    assert "No benchmark results yet" in text


def test_summarize_renders_tables_from_results_only(tmp_path) -> None:
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "2026-01-01-cpu-test-2c-quick.json").write_text(json.dumps(_fake_result()))
    (results_dir / "not-a-result.json").write_text("{}")
    results = summarize.load_results(results_dir)
    assert [r["_file"] for r in results] == ["2026-01-01-cpu-test-2c-quick.json"]
    text = summarize.render_docs(results)
    assert "no GPU machine was available" in text
    assert "## Latest quick run" in text and "not representative" in text
    assert "| small | 4 | 1 | onestep_fused | 250 |" in text
    assert "Test CPU (2 cores, 2 torch threads), no GPU" in text
    assert "xformers skipped: test" in text
    gpu = _fake_result(quick=False, gpu="NVIDIA H200")
    gpu["created"] = "2026-01-02T00:00:00+00:00"
    gpu["_file"] = "2026-01-02-gpu-nvidia-h200.json"
    text = summarize.render_docs(results + [gpu])
    assert "no GPU machine was available" not in text
    assert "## Latest full run" in text and "GPU NVIDIA H200" in text
    png = summarize.plot_run(results[0], tmp_path / "plot.png")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_run_all_combines_scripts_and_records_failures(tmp_path, monkeypatch) -> None:
    """run_all's own logic, with the benchmark processes replaced by stubs: one writes its JSON,
    one fails; the combined JSON, markdown and plot are written and the exit code says 1."""
    import run_all

    fake = _fake_result()

    def stub(name, out, quick, timeout):
        assert quick and timeout == 240.0
        if name == "train_rad_vs_dup":
            return 1, "Traceback ...\nRuntimeError: boom"
        out.write_text(json.dumps(fake["scripts"]["decode" if name.startswith("decode_") else name]))
        return 0, "ok"

    monkeypatch.setattr(run_all, "run_script", stub)
    code = run_all.main(["--quick", "--out-dir", str(tmp_path)])
    assert code == 1
    (result_file,) = tmp_path.glob("*.json")
    assert result_file.name.endswith("-cpu-test-2c-quick.json")
    result = json.loads(result_file.read_text())
    assert set(result["scripts"]) == {"decode", "decode_shift", "decode_smollm2", "attention_backends", "lora",
                                      "lora_quality"}
    assert result["failures"]["train_rad_vs_dup"]["returncode"] == 1
    md = result_file.with_suffix(".md").read_text()
    assert "`train_rad_vs_dup` failed (exit code 1)" in md and "RuntimeError: boom" in md
    assert result_file.with_suffix(".png").is_file()


def test_run_all_runs_a_variant_as_its_script_with_its_arguments(tmp_path, monkeypatch) -> None:
    import run_all

    seen = {}

    class FakeProcess:
        def __init__(self, cmd, **kwargs):
            seen["cmd"], seen["env"] = cmd, kwargs["env"]
            self.stdout = iter(["done\n"])

        def wait(self):
            return 0

    monkeypatch.setattr(run_all.subprocess, "Popen", FakeProcess)
    out = tmp_path / "o.json"
    assert run_all.run_script("decode_shift", out, True, None) == (0, "done")
    assert seen["cmd"][1].endswith("decode.py")
    assert seen["cmd"][2:] == ["--out", str(out), "--shift", "--batches", "1", "--quick"]
    assert seen["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    run_all.run_script("decode", out, False, None)
    assert seen["cmd"][2:] == ["--out", str(out)]


def test_run_all_discovers_every_benchmark_script() -> None:
    import run_all

    names = run_all.discover()
    assert names[:4] == ["decode", "decode_shift", "train_rad_vs_dup", "attention_backends"]
    assert "lora" in names
    assert run_all.VARIANTS["decode_shift"] == ("decode", ["--shift", "--batches", "1"])
    assert not {"_common", "run_all", "summarize"} & set(names)
    with pytest.raises(SystemExit):
        run_all.discover(["no_such_benchmark"])


@pytest.mark.parametrize("machine, slug", [
    ({"cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2}, "cpu-intel-xeon-2c"),
    ({"cpu": "AMD EPYC 7763 64-Core Processor", "cpu_count": 128}, "cpu-amd-epyc-7763-64-core-128c"),
    ({"gpu": "NVIDIA H200", "gpu_count": 8, "cpu": "x"}, "gpu-nvidia-h200-x8"),
])
def test_machine_slug(machine, slug) -> None:
    import run_all

    assert run_all.machine_slug(machine) == slug


def test_readme_benchmark_numbers_are_rendered_from_the_latest_full_run() -> None:
    """Every speed claim in the README's benchmark section comes from the recorded results:
    the block is exactly what ``summarize.py --readme`` renders from the latest full run."""
    latest = summarize.latest_full(summarize.load_results())
    assert latest is not None, "benchmarks/results/ holds no full run"
    readme = (ROOT / "README.md").read_text()
    expected = summarize.replace_readme_block(readme, summarize.render_readme(latest))
    assert readme == expected, "README benchmark block is stale: run `python benchmarks/summarize.py --readme README.md`"


def test_render_readme_takes_each_number_from_the_result() -> None:
    result = {"_file": "2026-01-01-cpu-test-2c.json", "machine": {"cpu": "Test CPU", "cpu_count": 2}, "scripts": {
        "decode_shift": {"config": {"prompt": 256, "new_tokens": 128, "repeats": 3}, "rows": [
            {"model": "small", "L": 8, "batch": 1, "method": m, "tokens_per_s_decode": t, "tpf": tpf}
            for m, t, tpf in (("ar", 50.0, 1.0), ("multistep", 30.0, 1.1), ("onestep_unfused", 140.0, 4.0),
                              ("onestep_fused", 210.0, 8.0))],
            "forward_cost": [{"model": "small", "L": 8, "tokens": 1, "seconds": 0.010},
                             {"model": "small", "L": 8, "tokens": 16, "seconds": 0.025}],
            "limits": [{"model": "small", "L": 8, "fused_vs_ar": 4.2, "fraction_of_ar_limit": 0.99,
                        "fused_vs_ar_limit": 4.24, "fused_vs_unfused": 1.5, "fraction_of_unfused_limit": 0.876,
                        "fraction_of_unfused_limit_exact": 0.97,
                        "fraction_of_unfused_limit_rounds": [0.85, 0.876, 0.9]}]}}}
    text = summarize.render_readme(result)
    assert "| small | yes | 50.0 | 30.0 | 140.0 | 210.0 | 8 | 4.20x (99.0%) | 1.50x | 87.6% | 97.0% |" in text
    assert "costs 2.50x one over a single token" in text and "= 4.24x here" in text
    assert "small 85.0%, 87.6%, 90.0%" in text and "no GPU machine was available" in text
    assert text.rstrip().endswith("`benchmarks/results/2026-01-01-cpu-test-2c.md`.")
    with pytest.raises(ValueError, match="bench-results"):
        summarize.replace_readme_block("no markers here", text)
