"""Trajectory collectors: run the multi-step teacher with recording on, return records.

:class:`TrajectoryCollector` is the plain-torch core: it drives any
:class:`~blockdistill.sampling.denoiser.Denoiser` (a wrapped backbone or a toy joint) through
:func:`~blockdistill.sampling.block.block_generate` with a :class:`TraceSpec`, and turns each
row's :class:`BlockTrace` into a :class:`TrajectoryRecord`. The two collection modes share it:

- **online** (:class:`OnlineCollector`): inside the training step, on-policy, nothing stored;
  the teacher is frozen and stays in eval mode;
- **offline**: through Lightning's predict loop into sharded files
  (:mod:`blockdistill.lightning.collect`).

Example::

    collector = TrajectoryCollector(HFDenoiser(teacher), top_k=64, max_new_tokens=256)
    records = collector(prompts.prompt_ids, prompts.prompt_lens, prompts.example_ids)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from blockdistill.distill.batch import DistillBatch, collate_records
from blockdistill.distill.filters import TrajectoryFilter
from blockdistill.distill.prompts import PromptBatch
from blockdistill.distill.records import TrajectoryRecord, response_length
from blockdistill.losses.rows import TokenDists
from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.block import block_generate
from blockdistill.sampling.denoiser import Denoiser
from blockdistill.sampling.policies import ConfidenceThreshold, UnmaskPolicy
from blockdistill.sampling.trace import BlockTrace, TraceSpec

__all__ = ["OnlineCollector", "TrajectoryCollector", "as_denoiser", "record_from_trace"]


def _include_committed(rows: TokenDists, tokens: Tensor) -> TokenDists:
    """Top-k rows that lack their committed token get it in place of a tied entry of equal
    probability, so the row, its sum and its leftover are unchanged and the committed token is
    never lost. Rare: the sampler commits the lowest-id argmax of the logits and the cut keeps the
    lowest ids among tied probabilities; only a softmax that rounds distinct logits to a tie
    with lower ids can leave it out."""
    if not rows.is_topk:
        return rows
    present = (rows.indices == tokens[:, None]).any(-1)
    if bool(present.all()):
        return rows
    idx = rows.indices.clone()
    for i in (~present).nonzero()[:, 0].tolist():
        top = rows.values[i].max()
        tied = (rows.values[i] == top).nonzero()[:, 0]
        idx[i, tied[-1]] = tokens[i]
    return TokenDists(rows.vocab_size, indices=idx, values=rows.values, leftover=rows.leftover)


def record_from_trace(trace: BlockTrace, example_id: str, prompt_ids: Tensor, eos_token_id: int | Sequence[int],
                      vocab_size: int,
                      keep_first_step: bool = False, pixel_values: Tensor | None = None,
                      image_grid_thw: Tensor | None = None) -> TrajectoryRecord:
    """A sampler trace -> a :class:`TrajectoryRecord` (on CPU).

    ``block_steps`` is the largest commit step in each position's block. Top-k commit rows
    always list the committed token (see :func:`_include_committed`). ``vocab_size`` is the V
    the caller expects; rows over another V raise.
    """
    if trace.commit.vocab_size != vocab_size:
        raise ValueError(f"example {example_id!r}: the teacher's rows are over {trace.commit.vocab_size} tokens "
                         f"but the vocabulary size is {vocab_size}")
    eos = [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(i) for i in eos_token_id]
    tokens = trace.tokens.cpu()
    step = trace.step.cpu()
    blocks = trace.block_ids().cpu()
    local = blocks - blocks.min() if blocks.numel() else blocks
    per_block = torch.zeros(int(local.max()) + 1 if local.numel() else 1, dtype=torch.long)
    per_block = per_block.scatter_reduce(0, local, step, reduce="amax")
    return TrajectoryRecord(
        example_id=str(example_id), prompt_ids=prompt_ids.cpu().long(), tokens=tokens, commit_step=step,
        block_steps=per_block[local], target=_include_committed(trace.commit.to("cpu"), tokens),
        block_size=trace.block_size, eos_token_id=eos[0], eos_token_ids=tuple(eos),
        response_len=response_length(tokens, eos),
        first_step=trace.first.to("cpu") if keep_first_step else None,
        pixel_values=None if pixel_values is None else pixel_values.cpu(),
        image_grid_thw=None if image_grid_thw is None else image_grid_thw.cpu(),
    )


def as_denoiser(teacher: nn.Module | Denoiser) -> Denoiser:
    """A :class:`BlockDiffusionLM` wrapped as an :class:`HFDenoiser`; any Denoiser as is."""
    if isinstance(teacher, BlockDiffusionLM):
        from blockdistill.sampling.hf import HFDenoiser

        return HFDenoiser(teacher)
    if not isinstance(teacher, Denoiser):
        raise TypeError(f"teacher must be a BlockDiffusionLM or implement the Denoiser protocol, got {type(teacher)}")
    return teacher


def _vocab_size(den: Denoiser) -> int:
    v = getattr(den, "vocab_size", None)
    if isinstance(v, int):
        return v
    model = getattr(den, "model", None)
    if isinstance(model, BlockDiffusionLM):
        return int(model.family.lm_head(model.model).weight.shape[0])
    raise ValueError("cannot tell the teacher's vocabulary size; pass vocab_size= to the collector")


class TrajectoryCollector:
    """Decode prompts with the multi-step teacher and record each trajectory.

    Args:
        teacher: a :class:`Denoiser` (or a :class:`BlockDiffusionLM`, wrapped automatically).
        policy: unmasking policy of the teacher (default: confidence threshold 0.85).
        top_k: store top-k rows (None: full rows).
        max_new_tokens: token budget per prompt.
        cache: sampler cache mode (``fused`` by default; all modes give the same tokens).
        record_first_step: also keep the first-step rows (needed by the mean-field baseline).
        vocab_size: V of the rows (inferred from the teacher when possible).
    """

    def __init__(self, teacher: nn.Module | Denoiser, *, policy: UnmaskPolicy | None = None,
                 top_k: int | None = None, max_new_tokens: int = 128, cache: str = "fused",
                 record_first_step: bool = False, vocab_size: int | None = None) -> None:
        self.denoiser = as_denoiser(teacher)
        self.policy = policy if policy is not None else ConfidenceThreshold()
        self.trace = TraceSpec(top_k=top_k)
        self.max_new_tokens, self.cache = max_new_tokens, cache
        self.record_first_step = record_first_step
        self.vocab_size = vocab_size if vocab_size is not None else _vocab_size(self.denoiser)

    @property
    def spec(self):
        return self.denoiser.spec

    @torch.no_grad()
    def __call__(self, prompt_ids: Tensor, prompt_lens: Tensor, example_ids: Sequence[str],
                 vision: VisionInputs | None = None, image_rows: Tensor | None = None) -> list[TrajectoryRecord]:
        """Records of every row, in row order. Shapes as in :class:`PromptBatch`."""
        if len(example_ids) != prompt_ids.shape[0]:
            raise ValueError(f"{len(example_ids)} example ids for {prompt_ids.shape[0]} prompts")
        out = block_generate(self.denoiser, prompt_ids, prompt_lens, vision, policy=self.policy, cache=self.cache,
                             max_new_tokens=self.max_new_tokens, record=self.trace)
        batch = PromptBatch(prompt_ids, prompt_lens, list(example_ids), vision, image_rows)
        records = []
        for b, trace in enumerate(out.traces):
            pix, thw = batch.row_vision(b)
            records.append(record_from_trace(trace, example_ids[b], prompt_ids[b, : int(prompt_lens[b])],
                                             self.spec.eos_token_ids, self.vocab_size, self.record_first_step,
                                             pix, thw))
        return records

    def collect(self, batch: PromptBatch) -> list[TrajectoryRecord]:
        """Records of the non-placeholder rows of ``batch``."""
        keep = list(range(len(batch))) if batch.skip is None else (~batch.skip).nonzero()[:, 0].tolist()
        if not keep:
            return []
        if len(keep) < len(batch):
            vision = None if batch.vision is None else batch.vision.select(keep, batch.image_rows)
            rows = None
            if batch.image_rows is not None:
                remap = {r: i for i, r in enumerate(keep)}
                rows = torch.tensor([remap[int(r)] for r in batch.image_rows if int(r) in remap])
            batch = PromptBatch(batch.prompt_ids[keep], batch.prompt_lens[keep],
                                [batch.example_ids[i] for i in keep], vision, rows)
        return self(batch.prompt_ids, batch.prompt_lens, batch.example_ids, batch.vision, batch.image_rows)


class OnlineCollector(nn.Module):
    """On-policy collection inside the training step: prompts in, a :class:`DistillBatch` out.

    Invariant: the teacher is frozen (``requires_grad=False``) and in eval mode, whatever
    ``train()`` is called with. Degenerate trajectories stay in the batch (so every rank runs
    the same forward) but are flagged ``dropped`` and excluded from the loss.
    """

    def __init__(self, teacher: nn.Module | Denoiser, *, filter: TrajectoryFilter | None = None,
                 **collector_kwargs) -> None:
        super().__init__()
        if isinstance(teacher, nn.Module):
            teacher.requires_grad_(False)
            teacher.eval()
            self.teacher = teacher  # registered: moves with the system, never trained
        self.collector = TrajectoryCollector(teacher, **collector_kwargs)
        self.filter = filter

    def train(self, mode: bool = True) -> OnlineCollector:
        super().train(mode)
        if isinstance(getattr(self, "teacher", None), nn.Module):
            self.teacher.eval()
        return self

    def forward(self, batch: PromptBatch) -> DistillBatch:
        records = self.collector.collect(batch)
        if not records:
            raise ValueError("online collection got a batch of placeholder rows only")
        reasons = [self.filter(r) if self.filter is not None else None for r in records]
        out = collate_records(records, pad_token_id=self.collector.spec.pad_token_id)
        out = out.to(batch.prompt_ids.device)
        out.dropped = torch.tensor([r is not None for r in reasons], device=batch.prompt_ids.device)
        out.meta = {"dropped": sum(r is not None for r in reasons)}
        return out
