"""The demo profile: Lightning's profiler actions split into the parts of a step (on a real
``SimpleProfiler`` run, so a renamed action fails here), the evaluation split, and the page
rendered from its data file."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import DataLoader, TensorDataset

from blockdistill.config import TrainerConfig
from blockdistill.lightning import build_trainer
from examples.echo_cxr import profile


def test_the_page_is_the_rendering_of_the_recorded_file():
    assert profile.PAGE.read_text() == profile.render_page(), \
        "docs/demo/profile.md is stale: run python -m examples.echo_cxr.profile render"


def test_split_actions_adds_up_known_durations():
    d = {"[Strategy]SingleDeviceStrategy.training_step": [1.0, 1.0],
         "[Strategy]SingleDeviceStrategy.backward": [2.0, 2.0],
         "[LightningModule]X.optimizer_step": [3.5, 3.5],  # runs training_step + backward as its closure
         "[LightningModule]X.optimizer_zero_grad": [0.25, 0.25],
         "[_TrainingEpochLoop].train_dataloader_next": [0.5, 0.5],
         "[Callback]GuardedCheckpoint{'every_n_train_steps': 1}.on_train_batch_end": [0.0, 2.0],
         "[Callback]ProgressLog.on_train_batch_end": [0.125, 0.125],
         "run_training_epoch": [20.0]}
    assert profile.split_actions(d) == {"data": 1.0, "forward": 2.0, "backward": 4.0, "optimizer": 1.5,
                                        "logging": 0.25, "checkpoint": 2.0, "other": 9.25}


class _Tiny(__import__("lightning").LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_split_actions_reads_a_real_simple_profiler_run(tmp_path):
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(24, 4), torch.randn(24, 1)), batch_size=4)
    prof = SimpleProfiler(dirpath=str(tmp_path), filename="p")
    cfg = TrainerConfig(max_steps=6, accelerator="cpu", log_every_n_steps=2, save_every_n_steps=3,
                        default_root_dir=str(tmp_path / "run"), enable_progress_bar=False)
    build_trainer(cfg, logger=False, profiler=prof).fit(_Tiny(), data)
    d = prof.recorded_durations
    parts = profile.split_actions(d)
    assert set(parts) == set(profile.PARTS)
    for name in ("data", "forward", "backward", "optimizer", "checkpoint"):
        assert parts[name] > 0, (name, sorted(d))
    # every part but "other" is timed inside the epoch loop, and they add up to it
    assert sum(parts.values()) == pytest.approx(sum(d["run_training_epoch"]))
    assert parts["forward"] == pytest.approx(sum(d["[Strategy]SingleDeviceStrategy.training_step"]))


def test_eval_split_and_its_table():
    results = {"variants": [{"name": "ar", "stats": {"wall_s": 5.0}}, {"name": "echo", "stats": {"wall_s": 2.0}}],
               "rows": [{"variant": "ar", "n": 500}, {"variant": "ar", "n": 100}, {"variant": "echo", "n": 500}],
               "speed": {"samples": 12, "by_variant": {"ar": {"tpf": 1.0, "nfe": 80.0, "tokens_per_s": 480.0},
                                                       "echo": {"tpf": 8.0, "nfe": 10.0, "tokens_per_s": 960.0}}}}
    ev = profile.eval_split(results, 20.0)
    assert ev["quality_decode_s"] == {"ar": 5.0, "echo": 2.0} and ev["speed_decode_s"] == {"ar": 2.0, "echo": 1.0}
    assert ev["quality_studies"] == 600 and ev["rest_s"] == 10.0
    table = profile.render_eval(ev)
    assert "| ar | 5.0 | 2.0 |" in table and "| all | 7.0 | 3.0 |" in table and "10.0 of 20" in table
