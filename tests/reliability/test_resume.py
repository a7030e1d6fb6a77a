"""Issue 19 §1: a run SIGKILLed mid-epoch, with shuffling on, resumes to the same losses and weights.

Each stage runs once uninterrupted and once killed (a real SIGKILL, in a subprocess, at the start
of a step after the checkpoint of the one before) and then resumed by a new run of the same
command. The resumed run's next-step loss, its whole loss curve and its final weights must equal
the uninterrupted run's, and its ``metrics.csv`` must still hold the steps before the kill.
"""

from __future__ import annotations

import json

import pytest

from blockdistill.cli import main
from tests.reliability.helpers import (
    losses,
    max_weight_diff,
    run_faulty,
    write_teacher,
    write_text_data,
)

# 16 examples in batches of 4: 4 steps per epoch; killed after step 6, in the middle of epoch 2.
STEPS, KILL, EVERY = 10, 6, 3
TRAIN = [f"trainer.max_steps={STEPS}", f"trainer.save_every_n_steps={EVERY}", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false", "data.batch_size=4", "optim.warmup_ratio=0.2"]


def cli_args(stage, tmp_path, run, tok, data, teacher=None, traj=None):
    cfg = {"ar": "configs/tiny/ar.yaml", "rad": "configs/tiny/rad.yaml", "dcd": "configs/tiny/dcd.yaml"}[stage]
    args = [f"train-{stage}", "--config", cfg, *TRAIN, f"data.tokenizer={tok}", f"data.train_file={data}",
            f"trainer.default_root_dir={tmp_path / run}", f"output_dir={tmp_path / run / 'model'}"]
    if stage == "dcd":
        args += [f"model.pretrained={teacher}", f"trajectories={traj}"]
    return args


def check_same(stage, tmp_path, kill):
    full = losses(tmp_path / "full" / "logs" / "version_0" / "metrics.csv")
    resumed = losses(tmp_path / "killed" / "logs" / "version_0" / "metrics.csv")
    assert sorted(full) == sorted(resumed) == list(range(STEPS)), (sorted(full), sorted(resumed))
    d_next = abs(full[kill] - resumed[kill])
    d_all = max(abs(full[s] - resumed[s]) for s in full)
    d_w = max_weight_diff(tmp_path / "full" / "model" / "model.safetensors",
                          tmp_path / "killed" / "model" / "model.safetensors")
    print(f"{stage}: max |d next-step loss| {d_next:.3g}, max |d loss| {d_all:.3g}, max |d weight| {d_w:.3g}")
    assert d_all <= 1e-6 and d_w <= 1e-6


@pytest.mark.parametrize("stage,kill", [("ar", KILL), ("rad", KILL), ("dcd", KILL), ("rad", 4)],
                         ids=["ar", "rad", "dcd", "rad-at-epoch-end"])
def test_cli_stage_killed_mid_epoch_resumes_exactly(stage, kill, tmp_path):
    tok, data = write_text_data(tmp_path)
    teacher = traj = None
    if stage == "dcd":
        teacher, traj = write_teacher(tmp_path), tmp_path / "traj"
        # 16 prompts -> 16 trajectories (no repetition filter): 4 batches per epoch, as for AR and RAD
        assert main(["collect", "--config", "configs/tiny/collect.yaml", f"model.pretrained={teacher}",
                     f"data.tokenizer={tok}", f"data.train_file={data}", f"output_dir={traj}",
                     "decode.repetition_ngram=0", "trainer.enable_progress_bar=false"]) == 0
        assert json.loads((traj / "manifest.json").read_text())["num_examples"] == 16
    assert main(cli_args(stage, tmp_path, "full", tok, data, teacher, traj)) == 0
    r = run_faulty("cli", cli_args(stage, tmp_path, "killed", tok, data, teacher, traj), kill_at=kill)
    assert r.returncode == -9, r.stderr[-3000:]
    assert not (tmp_path / "killed" / "model").exists()
    before = losses(tmp_path / "killed" / "logs" / "version_0" / "metrics.csv")
    assert sorted(before)[:kill] == list(range(kill))
    assert main(cli_args(stage, tmp_path, "killed", tok, data, teacher, traj)) == 0
    check_same(stage, tmp_path, kill)


def test_a_resume_with_other_training_settings_is_refused_unless_allowed(tmp_path, capsys):
    tok, data = write_text_data(tmp_path)
    base = [*cli_args("rad", tmp_path, "run", tok, data), "trainer.max_steps=4"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "optim.lr=1.0e-2", "block.block_size=8"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: checkpoint 0.003, now 0.01" in err and "block.block_size: checkpoint 4, now 8" in err
    assert "trainer.allow_config_change=true" in err
    assert not (tmp_path / "run" / "resume_changes.jsonl").exists()
    assert main([*base, "optim.lr=1.0e-3", "trainer.max_steps=6", "trainer.allow_config_change=true"]) == 0
    rec = [json.loads(line) for line in (tmp_path / "run" / "resume_changes.jsonl").read_text().splitlines()]
    assert rec == [{"resumed_at_step": 4, "changes": {"optim.lr": {"checkpoint": 0.003, "now": 0.001},
                                                      "trainer.max_steps": {"checkpoint": 4, "now": 6}}}]
    assert sorted(losses(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")) == list(range(6))
