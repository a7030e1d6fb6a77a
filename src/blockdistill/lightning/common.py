"""Pieces every stage's LightningModule shares: optimiser, schedule, the NaN-loss guard and the
LoRA hooks (adapters put on the trained model; checkpoints of a LoRA run hold only the weights
that train, and their optimiser state)."""

from __future__ import annotations

import math
from dataclasses import asdict

import lightning as L
import torch
from torch import Tensor, nn

from blockdistill.config import LoraConfig, OptimConfig
from blockdistill.models.families import pop_router_aux
from blockdistill.models.lora import apply_lora, is_lora, trainable_parameter_names

LORA_CHECKPOINT_KEY = "blockdistill_lora_trainable"
"""Checkpoint entry of a LoRA run: the names of the weights it holds (every other one is frozen
and rebuilt from the base model on resume)."""


class NaNLossError(FloatingPointError):
    """Training produced non-finite losses several steps in a row. The last checkpoint is intact."""


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay for biases, norms and embeddings-like 1-D parameters."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine to ``min_ratio`` (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


def with_router_aux(net: nn.Module, loss: Tensor, stats: dict[str, float]) -> tuple[Tensor, dict[str, float]]:
    """``loss`` plus the router load-balancing loss of the forward that made it, where the
    backbone has one (mixture of experts with ``output_router_logits``: HF adds it the same way,
    ``router_aux_loss_coef`` times HF's ``load_balancing_loss_func``); logged as ``router_aux``."""
    aux = pop_router_aux(net)
    if aux is None:
        return loss, stats
    return loss + aux.to(loss.dtype), {**stats, "router_aux": float(aux.detach())}


class StageSystem(L.LightningModule):
    """Base of the stage systems: optimiser/schedule from :class:`OptimConfig`, NaN guard, logging.

    Subclasses implement :meth:`compute_loss` and pass the trainable module as ``self.net``.
    """

    max_nan_skips = 3
    """Consecutive non-finite losses tolerated (steps skipped) before :class:`NaNLossError`."""

    def __init__(self, net: nn.Module, optim: OptimConfig) -> None:
        super().__init__()
        self.net = net
        self.optim = optim
        self._nan_streak = 0
        self._skip_step = False
        self.save_hyperparameters({"optim": asdict(optim)})

    def compute_loss(self, batch) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def use_lora(self, lora: LoraConfig | None) -> None:
        """Train LoRA adapters on ``self.net`` (a ``BlockDiffusionLM``) instead of every weight
        (None: full fine-tuning). Called by the RAD and DCD systems before training."""
        if lora is None:
            return
        apply_lora(self.net, lora)
        self.save_hyperparameters({"lora": asdict(lora)})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """A LoRA run saves only the weights that train (the optimiser holds state for no other)."""
        if is_lora(self.net):
            keep = set(trainable_parameter_names(self))
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
            checkpoint[LORA_CHECKPOINT_KEY] = sorted(keep)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming a LoRA run: the frozen weights are this model's (the same base, rebuilt), the
        trained ones come from the checkpoint. A LoRA checkpoint into a full run (or the other
        way round, or other adapters) is an error saying which."""
        saved = checkpoint.get(LORA_CHECKPOINT_KEY)
        lora = is_lora(self.net)
        if saved is None and not lora:
            return
        if saved is None or not lora:
            have, want = ("full-model", "LoRA") if saved is None else ("LoRA", "full fine-tuning")
            raise ValueError(f"cannot resume: the checkpoint is of a {have} run but this run trains with {want}; "
                             "use the same lora settings, or another trainer.default_root_dir")
        want = set(trainable_parameter_names(self))
        if set(saved) != want:
            extra, missing = sorted(set(saved) - want), sorted(want - set(saved))
            raise ValueError(f"cannot resume: the checkpoint's LoRA weights differ from this run's (only in the "
                             f"checkpoint: {extra[:5]}, only here: {missing[:5]}); use the same lora settings")
        state = checkpoint["state_dict"]
        for name, value in self.state_dict().items():
            if name not in want:
                state.setdefault(name, value)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, stats = self.compute_loss(batch)
        bad = torch.tensor(0.0 if bool(torch.isfinite(loss)) else 1.0, device=self.device)
        # Every rank takes the same decision (DDP/FSDP: a rank that skipped its backward would hang the others).
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="max")
        if float(bad) > 0:
            self._nan_streak += 1
            if self._nan_streak > self.max_nan_skips:
                raise NaNLossError(
                    f"loss was non-finite for {self._nan_streak} consecutive steps (last at global step "
                    f"{self.global_step}); checkpoints/last.ckpt holds the last step whose loss and weights were "
                    "finite. Resume from it with a lower learning rate: rerun with optim.lr=<lower> "
                    "trainer.allow_config_change=true (or check the data)."
                )
            self.print(f"warning: non-finite loss at step {self.global_step}; skipping this batch")
            self._skip_step = True
            # A loss of exactly zero that still reaches every trainable weight: every rank runs its backward
            # (so the gradient all-reduce matches) and the optimiser step is skipped in optimizer_step.
            return sum((p * 0).sum() for p in self.net.parameters() if p.requires_grad)
        self._nan_streak = 0
        self._skip_step = False
        bs = len(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in stats.items():
            self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """The optimiser step, skipped (closure run, no update) after a non-finite loss or when a
        gradient is non-finite (gradients are all-reduced, so every rank agrees)."""
        if optimizer_closure is not None:
            optimizer_closure()
        grads_ok = all(bool(torch.isfinite(p.grad).all()) for p in self.net.parameters() if p.grad is not None)
        if self.trainer.world_size > 1:  # FSDP shards the gradients: every rank must take the same decision
            bad = torch.tensor(0.0 if grads_ok else 1.0, device=self.device)
            grads_ok = float(self.trainer.strategy.reduce(bad, reduce_op="max")) == 0
        if self._skip_step or not grads_ok:
            if not self._skip_step:
                self._nan_streak += 1
                self.print(f"warning: non-finite gradient at step {self.global_step}; skipping the update")
            optimizer.zero_grad(set_to_none=True)
            return
        optimizer.step()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the gradients' global norm to ``optim.grad_clip`` (0: no clipping) before every update;
        under FSDP through the sharded root module's own ``clip_grad_norm_`` (the global norm over
        every shard; ``torch.nn.utils.clip_grad_norm_`` would see one rank's shard only)."""
        clip = gradient_clip_val if gradient_clip_val is not None else self.optim.grad_clip
        if not clip or clip <= 0:
            return
        root = getattr(self.trainer.strategy, "model", None)
        if type(root).__name__ == "FullyShardedDataParallel":
            root.clip_grad_norm_(clip)
            return
        self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, _ = self.compute_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)

    def configure_optimizers(self):
        o = self.optim
        opt = torch.optim.AdamW(param_groups(self.net, o.weight_decay), lr=o.lr, betas=tuple(o.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(o.warmup_ratio * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, total, warmup, o.schedule, o.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
