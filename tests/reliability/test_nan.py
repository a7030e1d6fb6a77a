"""Issue 19 §2: a NaN blow-up leaves a known-good ``last.ckpt`` that a lower-lr resume continues from.

Faults are real: weights set to NaN in the middle of training (a blow-up), an infinite gradient
on one step, and (2 CPU processes, gloo) a loss that is NaN on one rank only.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import NoiseConfig, OptimConfig, TrainerConfig
from blockdistill.lightning import NaNLossError, RADSystem
from blockdistill.recipes import block_data, fit
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from tests.foundation.helpers import random_examples
from tests.reliability.helpers import run_faulty, write_text_data


class BlowUpAt(L.Callback):
    """From step ``at`` on the weights hold NaN (what an overflowing update leaves behind)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():  # a norm weight: every position of every forward reads it
                next(p for p in module.net.parameters() if p.dim() == 1).view(-1)[0] = float("nan")


class InfGradAt(L.Callback):
    def __init__(self, at):
        self.at, self.hit = at, 0

    def on_after_backward(self, trainer, module):
        if trainer.global_step == self.at:
            next(p for p in module.net.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
            self.hit += 1


def setup(seed=0):
    L.seed_everything(seed)
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(seed=seed), tiny_tokenizer(), block_size=4).train()
    ex = random_examples([5, 7, 3, 9, 4, 6, 8, 2], [6, 3, 8, 2, 7, 5, 4, 9], seed=11)
    data = block_data(ex, block_size=4, eos_token_id=bd.spec.eos_token_id, pad_token_id=bd.spec.pad_token_id,
                      batch_size=2)
    return bd, data


def ckpt(root):
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)


def finite(state):
    return all(bool(torch.isfinite(v).all()) for v in state["state_dict"].values() if v.is_floating_point())


def test_blow_up_keeps_the_last_good_checkpoint_and_a_lower_lr_resume_finishes(tmp_path):
    tcfg = TrainerConfig(max_steps=12, accelerator="cpu", default_root_dir=str(tmp_path), save_every_n_steps=2,
                         log_every_n_steps=1, enable_progress_bar=False)
    bd, data = setup()
    with pytest.raises(NaNLossError, match="last step whose loss and weights were finite"):
        fit(RADSystem(bd, OptimConfig(lr=3e-3), NoiseConfig()), data, tcfg, callbacks=[BlowUpAt(5)])
    good = ckpt(tmp_path)
    assert good["global_step"] == 4 and finite(good)  # steps 6 and 8 came after the blow-up: not written
    bd, data = setup(seed=1)  # a fresh process would rebuild the model; the checkpoint restores it
    res = fit(RADSystem(bd, OptimConfig(lr=1e-3), NoiseConfig()), data,
              TrainerConfig(**{**tcfg.__dict__, "allow_config_change": True}))
    assert res.steps == 12
    last = ckpt(tmp_path)
    assert last["global_step"] == 12 and finite(last)
    assert "optim.lr" in (tmp_path / "resume_changes.jsonl").read_text()


def test_a_refused_lower_lr_resume_names_the_override(tmp_path):
    tcfg = TrainerConfig(max_steps=8, accelerator="cpu", default_root_dir=str(tmp_path), save_every_n_steps=2,
                         enable_progress_bar=False)
    bd, data = setup()
    with pytest.raises(NaNLossError):  # non-finite at steps 3-6: the fourth in a row stops the run
        fit(RADSystem(bd, OptimConfig(lr=3e-3), NoiseConfig()), data, tcfg, callbacks=[BlowUpAt(3)])
    bd, data = setup()
    with pytest.raises(Exception, match=r"optim\.lr: checkpoint 0\.003, now 0\.001.*allow_config_change"):
        fit(RADSystem(bd, OptimConfig(lr=1e-3), NoiseConfig()), data, tcfg)


def test_an_infinite_gradient_skips_one_update_and_training_goes_on(tmp_path):
    tcfg = TrainerConfig(max_steps=6, accelerator="cpu", default_root_dir=str(tmp_path), save_every_n_steps=1,
                         enable_progress_bar=False)
    bd, data = setup()
    hook = InfGradAt(3)
    before = {}

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 3:
                before.update({n: p.detach().clone() for n, p in module.net.named_parameters()})

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 4:  # the skipped update left every weight as it was
                assert all(torch.equal(before[n], p) for n, p in module.net.named_parameters())

    res = fit(RADSystem(bd, OptimConfig(lr=3e-3), NoiseConfig()), data, tcfg, callbacks=[hook, Snapshot()])
    assert hook.hit == 1 and res.steps == 6
    assert all(bool(torch.isfinite(p).all()) for p in bd.parameters())


def test_ddp_nan_on_one_rank_stops_every_rank_and_keeps_the_good_checkpoint(tmp_path):
    tok, data = write_text_data(tmp_path)
    args = ["train-rad", "--config", "configs/tiny/rad.yaml", f"data.tokenizer={tok}", f"data.train_file={data}",
            "trainer.max_steps=8", "trainer.save_every_n_steps=2", "trainer.strategy=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.batch_size=2",
            f"output_dir={tmp_path / 'rad'}", f"trainer.default_root_dir={tmp_path / 'run'}"]
    r = run_faulty("cli", args, nan_at=3, nan_rank=1, timeout=240)
    assert r.returncode != 0 and "non-finite for 4 consecutive steps" in r.stderr, r.stderr[-3000:]
    good = ckpt(tmp_path / "run")
    assert good["global_step"] == 2 and finite(good)
    assert not (tmp_path / "rad").exists()


@pytest.mark.slow  # two processes, about as long as the DDP test (161 s vs 145 s side by side, under contention)
def test_fsdp2_nan_on_one_rank_skips_and_stops_every_rank_alike_with_the_weights_unchanged(tmp_path):
    """The guard under real FSDP2 sharding (``fully_shard``, Lightning's ModelParallelStrategy), 2
    CPU processes over gloo: rank 1's loss is NaN from step 3; both ranks skip steps 3, 4, 5 with
    the gathered weights unchanged, and both stop at the 4th with NaNLossError; last.ckpt is step
    2's, finite. (FSDP1, Lightning's ``strategy=fsdp``, cannot run on CPU: see the next test.)"""
    tok, data = write_text_data(tmp_path)
    args = ["train-rad", "--config", "configs/tiny/rad.yaml", f"data.tokenizer={tok}", f"data.train_file={data}",
            "trainer.max_steps=8", "trainer.save_every_n_steps=2", "trainer.devices=2",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.batch_size=2",
            f"output_dir={tmp_path / 'rad'}", f"trainer.default_root_dir={tmp_path / 'run'}"]
    r = run_faulty("cli", args, nan_at=3, nan_rank=1, fsdp2=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    for rank in (0, 1):
        assert f"[rank{rank}]: blockdistill.lightning.common.NaNLossError: loss was non-finite for 4 consecutive " \
               "steps (last at global step 6)" in out, out[-3000:]
        assert [line for line in r.stdout.splitlines() if line.endswith(f"(rank {rank})")] == \
               [f"weights unchanged at step {s} (rank {rank})" for s in (4, 5, 6)]
    assert out.count("warning: non-finite loss at step") == 3  # printed by rank 0, one per skipped step
    good = ckpt(tmp_path / "run")
    assert good["global_step"] == 2 and finite(good)
    assert not (tmp_path / "rad").exists()


def test_fsdp1_cannot_run_on_cpu_here(tmp_path):
    """Why the FSDP1 code paths (``strategy=fsdp``, the FSDP root's ``clip_grad_norm_``) have no CPU
    test: Lightning refuses it, and torch's FSDP1 itself refuses a machine without an accelerator."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel

    with pytest.raises(ValueError, match="The strategy `fsdp` requires a GPU accelerator"):
        L.Trainer(strategy="fsdp", accelerator="cpu", devices=2, logger=False)
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present here")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="FSDP needs a non-CPU accelerator device, but no accelerator"):
            FullyShardedDataParallel(torch.nn.Linear(2, 2))
    finally:
        dist.destroy_process_group()
