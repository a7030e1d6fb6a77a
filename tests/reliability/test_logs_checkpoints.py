"""Issue 16: a run without a terminal logs one line per N steps; what a run writes is configurable.

The progress line is read from the stderr of a real CLI run whose stderr is a pipe (no TTY) and
checked against the run's own ``metrics.csv`` and the schedule; the checkpoints kept are checked
against the losses that ranked them.
"""

from __future__ import annotations

import re

import pytest

from blockdistill.config import NoiseConfig, OptimConfig, TrainerConfig
from blockdistill.lightning import RADSystem
from blockdistill.lightning.common import warmup_cosine
from blockdistill.recipes import fit
from tests.reliability.helpers import losses, run_faulty, write_text_data
from tests.reliability.test_nan import setup

LINE = re.compile(r"step (\d+)/(\d+) loss ([0-9.]+) lr ([0-9.e+-]+) tokens/s (\d+)")


def test_progress_line_every_n_steps_without_a_terminal(tmp_path):
    tok, data = write_text_data(tmp_path)
    run = tmp_path / "run"
    r = run_faulty("cli", ["train-rad", "--config", "configs/tiny/rad.yaml", f"data.tokenizer={tok}",
                           f"data.train_file={data}", f"trainer.default_root_dir={run}", f"output_dir={run / 'model'}",
                           "trainer.max_steps=6", "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false",
                           "optim.warmup_ratio=0.5"])
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [m.groups() for m in LINE.finditer(r.stderr)]
    assert [int(s) for s, *_ in lines] == [2, 4, 6], r.stderr[-3000:]
    csv_loss = losses(run / "logs" / "version_0" / "metrics.csv")
    for step, total, loss, lr, tps in lines:
        step = int(step)
        assert int(total) == 6
        assert abs(float(loss) - csv_loss[step - 1]) <= 1e-4  # the loss of the step just taken
        assert float(lr) == pytest.approx(3e-3 * warmup_cosine(step, 6, 3, "cosine", 0.1), rel=1e-3)
        assert int(tps) > 0


def _fit(tmp_path, **trainer):
    bd, data = setup()
    cfg = TrainerConfig(max_steps=6, default_root_dir=str(tmp_path), enable_progress_bar=False,
                        save_every_n_steps=1, log_every_n_steps=1, **trainer)
    fit(RADSystem(bd, OptimConfig(lr=1e-3), NoiseConfig(), "rad", seed=0), data, cfg)
    return sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))


def test_default_keeps_only_last(tmp_path):
    assert _fit(tmp_path) == ["last.ckpt"]


def test_save_top_k_keeps_the_best_by_monitor_and_no_last(tmp_path):
    kept = _fit(tmp_path, save_last=False, save_top_k=2)
    loss = losses(tmp_path / "logs" / "version_0" / "metrics.csv")
    # step=k.ckpt is written after k steps and ranked by the loss of step k - 1
    best = sorted(range(1, 7), key=lambda k: loss[k - 1])[:2]
    assert kept == sorted(f"step={k}.ckpt" for k in best)


def test_nothing_written_when_both_off(tmp_path):
    bd, data = setup()
    cfg = TrainerConfig(max_steps=2, default_root_dir=str(tmp_path), enable_progress_bar=False, save_last=False)
    fit(RADSystem(bd, OptimConfig(lr=1e-3), NoiseConfig(), "rad", seed=0), data, cfg)
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))
