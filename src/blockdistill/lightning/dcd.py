"""Stage 3: DCD, the one-step student distilled from its multi-step teacher's trajectories.

Each training sequence is in the RAD layout: the clean blocks are the teacher's committed
tokens, every noisy block is fully masked (exactly what one-step inference sees), and all
blocks of a response train in one forward. The loss is
``sum_i w_i D(q_i, p_student) + lambda_eos * CE(EOS)`` (:func:`blockdistill.losses.distill.dcd_loss`).

Batches are either :class:`~blockdistill.distill.batch.DistillBatch` (offline: collated
records) or :class:`~blockdistill.distill.prompts.PromptBatch` (online: the frozen teacher
decodes them inside the step through an :class:`OnlineCollector`).

Example::

    system = DCDSystem.from_teacher(teacher, OptimConfig(lr=1e-5), online=True, top_k=64)
    build_trainer(cfg.trainer).fit(system, PromptDataModule(prompts, pad_token_id=eos))
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor

from blockdistill.adapter import BlockDiffusionLM
from blockdistill.config import OptimConfig
from blockdistill.distill.batch import DistillBatch
from blockdistill.distill.collectors import OnlineCollector
from blockdistill.distill.prompts import PromptBatch
from blockdistill.distill.schedules import Schedule, proportional, step_weights
from blockdistill.distill.targets import CommitStepTarget, TargetBuilder
from blockdistill.lightning.common import StageSystem
from blockdistill.losses.distill import Divergence, dcd_loss, forward_kl

__all__ = ["DCDSystem"]


def _name(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__)


class DCDSystem(StageSystem):
    """Trains ``student`` (``self.net``); the teacher, if any, lives frozen inside ``collector``.

    Invariants: only the student's parameters are in the optimiser; the teacher has
    ``requires_grad=False``, stays in eval mode and is left out of checkpoints (it is rebuilt
    from its own weights on resume).

    Args:
        student: the model being trained.
        optim: optimiser settings.
        collector: online collection (None: batches are offline :class:`DistillBatch`es).
        target: joint-target builder (default: commit-step rows, DCD).
        schedule: step-weight schedule (default: proportional to the commit step).
        divergence: per-position divergence (default: forward KL).
        lambda_eos: weight of the EOS cross-entropy.
    """

    def __init__(self, student: BlockDiffusionLM, optim: OptimConfig, *, collector: OnlineCollector | None = None,
                 target: TargetBuilder | None = None, schedule: Schedule = proportional,
                 divergence: Divergence = forward_kl, lambda_eos: float = 1.0) -> None:
        super().__init__(student, optim)
        self.collector = collector
        self.target = target if target is not None else CommitStepTarget()
        self.schedule, self.divergence, self.lambda_eos = schedule, divergence, lambda_eos
        # The teacher is not saved in checkpoints, so its keys are legitimately absent on load.
        self.strict_loading = False
        self.save_hyperparameters({"dcd": {"target": _name(self.target), "schedule": _name(schedule),
                                           "divergence": _name(divergence), "lambda_eos": lambda_eos,
                                           "online": collector is not None}})

    @classmethod
    def from_teacher(cls, teacher: BlockDiffusionLM, optim: OptimConfig, *, online: bool,
                     collect: dict[str, Any] | None = None, **kwargs: Any) -> DCDSystem:
        """The student is a deep copy of ``teacher``. ``online=True`` keeps the teacher (frozen)
        for in-step collection with ``collect`` options (see :class:`OnlineCollector`);
        ``online=False`` drops it (offline records carry everything the loss needs)."""
        student = copy.deepcopy(teacher)
        student.requires_grad_(True)
        student.train()
        collector = OnlineCollector(teacher, **(collect or {})) if online else None
        return cls(student, optim, collector=collector, **kwargs)

    @property
    def student(self) -> BlockDiffusionLM:
        return self.net

    @property
    def teacher(self) -> Any:
        return None if self.collector is None else getattr(self.collector, "teacher", self.collector.collector.denoiser)

    def distill_batch(self, batch: DistillBatch | PromptBatch) -> DistillBatch:
        """Offline batches pass through; prompt batches are decoded by the teacher (no grad)."""
        if isinstance(batch, PromptBatch):
            if self.collector is None:
                raise TypeError("got prompts but this DCDSystem has no online collector; pass collector= "
                                "(online) or train on collated trajectory records (offline)")
            return self.collector(batch)
        return batch

    def compute_loss(self, batch: DistillBatch | PromptBatch) -> tuple[Tensor, dict[str, float]]:
        batch = self.distill_batch(batch)
        spec = self.net.spec
        if batch.block_size != spec.block_size:
            raise ValueError(f"trajectories were decoded with block size {batch.block_size} but the student's is "
                             f"{spec.block_size}")
        if batch.eos_token_id != spec.eos_token_id:
            raise ValueError(f"trajectories end with EOS id {batch.eos_token_id} but the student's is "
                             f"{spec.eos_token_id}")
        target = self.target(batch)
        kl_mask, eos_mask = batch.kl_mask, batch.eos_mask
        weights = step_weights(self.schedule, batch.commit_step, batch.block_steps, batch.block_index, kl_mask)
        logits = self.net.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, batch.masked(),
                                           batch.gen_index, vision=batch.vision)
        loss, stats = dcd_loss(logits, target, weights, kl_mask, eos_mask, eos_token_id=spec.eos_token_id,
                               lambda_eos=self.lambda_eos, divergence=self.divergence)
        stats["dropped"] = float(batch.dropped.sum()) if batch.dropped is not None else 0.0
        return loss, stats

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("collector.")]:
            del state[key]

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, (DistillBatch, PromptBatch)):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
