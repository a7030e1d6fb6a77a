"""Issue 19 §1 through the ECHO stages: ar, rad and dcd each SIGKILLed mid-epoch (shuffled
loader, second epoch) and resumed by rerunning the stage give the uninterrupted run's losses and
weights, and keep the log of the part before the kill."""

from __future__ import annotations

import shutil

import pytest

from tests.reliability.helpers import ROOT, losses, max_weight_diff, run_faulty

# 32 studies in batches of 8: 4 steps per epoch; killed after step 6 (epoch 2, batch 3).
SMOKE = str(ROOT / "examples/echo_cxr/configs/smoke")
STAGE_ARGS = ["data.n_train=32", "dcd.distill.on_policy_fraction=0",
              "collect.n_prompts=32", "collect.batch_size=16", "dcd.batch_size=8"]
TRAIN = {s: [f"{s}.trainer.max_steps=8", f"{s}.trainer.save_every_n_steps=3"] for s in ("ar", "rad", "dcd")}
KILL = 6


def echo(stage, run_dir, kill_at=None):
    args = [stage, "--config", SMOKE, f"run_dir={run_dir}", *STAGE_ARGS, *[a for v in TRAIN.values() for a in v]]
    return run_faulty("echo", args, kill_at=kill_at, timeout=600)


CHAIN = (("ar", "ar", "ar"), ("rad", "rad_L8", "rad_L8"), ("collect", None, None), ("dcd", "dcd_L8", "dcd_L8"))


def test_echo_ar_stage_killed_mid_epoch_resumes_exactly(tmp_path):
    """In ``make test``: the ar stage (about 30 s)."""
    kill_and_compare(tmp_path, CHAIN[:1])


@pytest.mark.slow
def test_echo_ar_rad_dcd_stages_killed_mid_epoch_resume_exactly(tmp_path):
    """Every training stage of the pipeline (about 2 minutes on 2 cores)."""
    kill_and_compare(tmp_path, CHAIN)


def kill_and_compare(tmp_path, chain):
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = echo("data", full)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copytree(full, killed)
    report = []
    for stage, model, train in chain:
        r = echo(stage, full)
        assert r.returncode == 0, r.stderr[-3000:]
        if model is None:
            r = echo(stage, killed)
            assert r.returncode == 0, r.stderr[-3000:]
            continue
        r = echo(stage, killed, kill_at=KILL)
        assert r.returncode == -9, r.stderr[-3000:]
        log = killed / train / "train" / "logs" / "version_0" / "metrics.csv"
        assert sorted(losses(log)) == list(range(KILL)), stage
        r = echo(stage, killed)
        assert r.returncode == 0 and "resuming" in r.stdout + r.stderr, r.stderr[-3000:]
        a = losses(full / train / "train" / "logs" / "version_0" / "metrics.csv")
        b = losses(log)
        assert sorted(a) == sorted(b) == list(range(8)), stage
        d_loss = max(abs(a[s] - b[s]) for s in a)
        d_w = max_weight_diff(full / model / "model" / "model.safetensors", killed / model / "model" / "model.safetensors")
        report.append(f"{stage}: max |d next-step loss| {abs(a[KILL] - b[KILL]):.3g}, max |d loss| {d_loss:.3g}, "
                      f"max |d weight| {d_w:.3g}")
        assert d_loss <= 1e-6 and d_w <= 1e-6, report[-1]
    print("\n".join(report))
