"""Stage 3: DCD, the one-step student distilled from its multi-step teacher's trajectories.

Each training sequence is in the RAD layout: the clean blocks are the teacher's committed
tokens, every noisy block is fully masked (exactly what one-step inference sees), and all
blocks of a response train in one forward. The loss is
``sum_i w_i D(q_i, p_student) + lambda_eos * CE(EOS)`` (:func:`blockdistill.losses.distill.dcd_loss`).

Batches are either :class:`~blockdistill.distill.batch.DistillBatch` (offline: collated
records) or :class:`~blockdistill.distill.prompts.PromptBatch` (online: the frozen teacher
decodes them inside the step through an :class:`OnlineCollector`).

On-policy steps (``on_policy=StudentRolloutCollector(teacher, ...)``, ``on_policy_fraction``):
a fraction of the training batches is replaced by the student's own one-step decode of the
same prompts, with every block relabelled by the teacher given the student's prefix (DAgger;
:mod:`blockdistill.distill.relabel`), so the student also learns from the contexts it will
read at inference.

Example::

    system = DCDSystem.from_teacher(teacher, OptimConfig(lr=1e-5), online=True, top_k=64)
    build_trainer(cfg.trainer).fit(system, PromptDataModule(prompts, pad_token_id=eos))
"""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import Tensor

from blockdistill.config import LoraConfig, OptimConfig
from blockdistill.distill.batch import DistillBatch
from blockdistill.distill.collectors import OnlineCollector
from blockdistill.distill.prompts import PromptBatch
from blockdistill.distill.relabel import StudentRolloutCollector
from blockdistill.distill.schedules import Schedule, proportional, step_weights
from blockdistill.distill.targets import CommitStepTarget, TargetBuilder
from blockdistill.lightning.common import StageSystem, with_router_aux
from blockdistill.losses.distill import Divergence, dcd_loss, forward_kl
from blockdistill.models.adapter import BlockDiffusionLM

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
        on_policy: the frozen teacher's relabeller of student decodes (None: no on-policy steps).
        on_policy_fraction: share of training steps, from ``on_policy_start`` on, that train on
            the student's own decodes (spread evenly: step ``s`` is on-policy when
            ``floor((s + 1 - start) * f) > floor((s - start) * f)``).
        on_policy_start: first global step that may be on-policy (let the student learn the
            teacher's contexts first).
        lora: train LoRA adapters on the student (put on it in place) instead of every weight.
    """

    def __init__(self, student: BlockDiffusionLM, optim: OptimConfig, *, collector: OnlineCollector | None = None,
                 target: TargetBuilder | None = None, schedule: Schedule = proportional,
                 divergence: Divergence = forward_kl, lambda_eos: float = 1.0,
                 on_policy: StudentRolloutCollector | None = None, on_policy_fraction: float = 0.0,
                 on_policy_start: int = 0, lora: LoraConfig | None = None) -> None:
        super().__init__(student, optim)
        self.use_lora(lora)
        if not 0.0 <= on_policy_fraction <= 1.0:
            raise ValueError(f"on_policy_fraction must be in [0, 1], got {on_policy_fraction}")
        if on_policy_fraction > 0 and on_policy is None:
            raise ValueError("on_policy_fraction > 0 needs on_policy=StudentRolloutCollector(teacher, ...)")
        if on_policy_start < 0:
            raise ValueError(f"on_policy_start must be >= 0, got {on_policy_start}")
        self.collector = collector
        self.on_policy, self.on_policy_fraction, self.on_policy_start = on_policy, on_policy_fraction, on_policy_start
        self.target = target if target is not None else CommitStepTarget()
        self.schedule, self.divergence, self.lambda_eos = schedule, divergence, lambda_eos
        # The teacher is not saved in checkpoints, so its keys are legitimately absent on load.
        self.strict_loading = False
        self.save_hyperparameters({"dcd": {"target": _name(self.target), "schedule": _name(schedule),
                                           "divergence": _name(divergence), "lambda_eos": lambda_eos,
                                           "online": collector is not None,
                                           "on_policy_fraction": on_policy_fraction,
                                           "on_policy_start": on_policy_start}})

    @classmethod
    def from_teacher(cls, teacher: BlockDiffusionLM, optim: OptimConfig, *, online: bool,
                     collect: dict[str, Any] | None = None, on_policy: dict[str, Any] | None = None,
                     **kwargs: Any) -> DCDSystem:
        """The student is a deep copy of ``teacher``. ``online=True`` keeps the teacher (frozen)
        for in-step collection with ``collect`` options (see :class:`OnlineCollector`);
        ``online=False`` drops it (offline records carry everything the loss needs) unless
        ``on_policy`` options are given (see :class:`StudentRolloutCollector`): the teacher then
        relabels the student's decodes on the on-policy steps."""
        student = copy.deepcopy(teacher)
        student.requires_grad_(True)
        student.train()
        collector = OnlineCollector(teacher, **(collect or {})) if online else None
        relabeller = StudentRolloutCollector(teacher, **on_policy) if on_policy is not None else None
        return cls(student, optim, collector=collector, on_policy=relabeller, **kwargs)

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

    def is_on_policy_step(self, step: int) -> bool:
        """Whether global step ``step`` trains on the student's own decodes."""
        s, f = step - self.on_policy_start, self.on_policy_fraction
        return self.on_policy is not None and s >= 0 and math.floor((s + 1) * f) > math.floor(s * f)

    def training_step(self, batch: DistillBatch | PromptBatch, batch_idx: int) -> Tensor | None:
        if self.is_on_policy_step(self.global_step):
            batch = self.on_policy_batch(batch)
            self.log("train/on_policy_relabel_forwards", float(batch.meta.get("relabel_forwards", 0)),
                     batch_size=len(batch))
        return super().training_step(batch, batch_idx)

    def on_policy_batch(self, batch: DistillBatch | PromptBatch) -> DistillBatch:
        """The student decodes ``batch``'s prompts one step per block; the teacher relabels each block
        (an online prompt batch is not decoded by the teacher first)."""
        if self.on_policy is None:
            raise TypeError("this DCDSystem has no on-policy relabeller; pass on_policy=")
        prompts = batch if isinstance(batch, PromptBatch) else batch.prompts(self.student.spec.pad_token_id)
        return self.on_policy(self.student, prompts)

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
        loss, stats = dcd_loss(logits, target, weights, kl_mask, eos_mask, eos_token_id=spec.eos_token_ids,
                               lambda_eos=self.lambda_eos, divergence=self.divergence)
        loss, stats = with_router_aux(self.net, loss, stats)
        stats["dropped"] = float(batch.dropped.sum()) if batch.dropped is not None else 0.0
        return loss, stats

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(("collector.", "on_policy."))]:
            del state[key]

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, (DistillBatch, PromptBatch)):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
