"""``optim.grad_clip`` clips the global gradient norm before every update (it used to be ignored).

AdamW's first-moment buffer after one step is ``(1 - beta1) * g`` for the gradient ``g`` the
update used, so the norm of ``g`` after clipping is read back from the optimiser itself.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from blockdistill.config import NoiseConfig, OptimConfig, TrainerConfig
from blockdistill.lightning import RADSystem
from blockdistill.recipes import fit
from tests.reliability.test_nan import setup


class RawGradNorm(L.Callback):
    """The global gradient norm before clipping (``on_before_optimizer_step`` runs before it)."""

    norm = None

    def on_before_optimizer_step(self, trainer, module, optimizer):
        grads = [p.grad.double().norm() for p in module.parameters() if p.grad is not None]
        self.norm = float(torch.stack(grads).norm())


def used_grad_norm(optimizer, beta1: float) -> float:
    bufs = [s["exp_avg"].double().norm() for s in optimizer.state.values() if "exp_avg" in s]
    return float(torch.stack(bufs).norm()) / (1 - beta1)


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_grad_clip_bounds_the_update_gradient(tmp_path, clip):
    bd, data = setup()
    optim = OptimConfig(lr=1e-3, warmup_ratio=0.0, grad_clip=clip)
    raw = RawGradNorm()
    res = fit(RADSystem(bd, optim, NoiseConfig(), "rad", seed=0), data,
              TrainerConfig(max_steps=1, default_root_dir=str(tmp_path), enable_progress_bar=False, save_last=False),
              logger=False, callbacks=[raw])
    used = used_grad_norm(res.trainer.optimizers[0], optim.betas[0])
    assert raw.norm is not None and raw.norm > 0.05 * 4  # the tiny model's gradient is well above the clip
    if clip == 0:
        assert math.isclose(used, raw.norm, rel_tol=1e-4)  # no clipping: the raw gradient is used
    else:
        assert math.isclose(used, clip, rel_tol=1e-3), (used, raw.norm)
