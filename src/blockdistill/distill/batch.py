"""``DistillBatch``: trajectory records padded into the tensors a DCD training step needs.

The clean streams follow DESIGN.md §2 (prompt + response + EOS padding to a block boundary,
then batch padding); generated positions are packed to ``(B, G)`` so that the student's
logits, the teacher targets, the step weights and both loss masks line up index for index.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from blockdistill.data.vision import collate_vision
from blockdistill.distill.prompts import PromptBatch
from blockdistill.distill.records import TrajectoryRecord
from blockdistill.layout import block_id
from blockdistill.losses.rows import TokenDists
from blockdistill.models.families import VisionInputs

__all__ = ["DistillBatch", "collate_records"]


@dataclass
class DistillBatch:
    """A padded batch of trajectories. ``n`` = clean width, ``G`` = generated width."""

    example_ids: list[str]
    """Row ids."""
    input_ids: Tensor
    """Long ``(B, n)``: clean streams (teacher's tokens, EOS padding), then ``pad_token_id``."""
    prompt_lens: Tensor
    """Long ``(B,)``: P."""
    seq_lens: Tensor
    """Long ``(B,)``: n of each row (a block boundary)."""
    response_lens: Tensor
    """Long ``(B,)``: R, tokens before the first EOS."""
    gen_index: Tensor
    """Long ``(B, G)``: clean index ``P + g`` of generated position g (``P`` on padding)."""
    gen_valid: Tensor
    """Bool ``(B, G)``: generated position exists (not batch padding)."""
    tokens: Tensor
    """Long ``(B, G)``: teacher's committed tokens (as recorded, before EOS forcing)."""
    commit_step: Tensor
    """Long ``(B, G)``: ``k(i)`` (1 on padding)."""
    block_steps: Tensor
    """Long ``(B, G)``: steps taken by the block of i (1 on padding)."""
    target: TokenDists
    """``(B, G)`` rows ``q_i`` at the commit step."""
    block_size: int
    """L."""
    eos_token_id: int
    """EOS id."""
    first_step: TokenDists | None = None
    """``(B, G)`` rows at the block's first step, if recorded."""
    vision: VisionInputs | None = None
    """Vision inputs of the batch, images in row order."""
    image_rows: Tensor | None = None
    """Long ``(num_images,)``: row of each image."""
    dropped: Tensor | None = None
    """Bool ``(B,)``: rows excluded from the loss (degenerate trajectories in online collection)."""
    meta: dict = field(default_factory=dict)
    """Counters for logging (e.g. ``{"dropped": 1}``)."""

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.target.vocab_size

    @property
    def _g(self) -> Tensor:
        return torch.arange(self.gen_index.shape[1], device=self.gen_index.device)[None]

    def _kept(self) -> Tensor:
        keep = self.gen_valid
        if self.dropped is not None:
            keep = keep & ~self.dropped[:, None]
        return keep

    @property
    def kl_mask(self) -> Tensor:
        """Bool ``(B, G)``: positions in the divergence term: the response and its terminating EOS
        (the teacher's rows after its first EOS describe tokens the clean stream replaces by EOS)."""
        return self._kept() & (self._g <= self.response_lens[:, None])

    @property
    def eos_mask(self) -> Tensor:
        """Bool ``(B, G)``: EOS-padding positions (terminating EOS and the padding after it)."""
        return self._kept() & (self._g >= self.response_lens[:, None])

    @property
    def block_index(self) -> Tensor:
        """Long ``(B, G)``: block id of each generated position."""
        return block_id(self.gen_index, self.block_size)

    def masked(self) -> Tensor:
        """Bool ``(B, n)``: every generated position, the noisy copy the student sees fully masked
        (one-step inference: the prompt tail stays visible, the rest of each block is masks)."""
        idx = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)[None]
        return (idx >= self.prompt_lens[:, None]) & (idx < self.seq_lens[:, None])

    def prompts(self, pad_token_id: int | None = None) -> PromptBatch:
        """The batch's prompts (with their images), e.g. for the student to decode on-policy."""
        pad = self.eos_token_id if pad_token_id is None else pad_token_id
        p = int(self.prompt_lens.max())
        ids = self.input_ids[:, :p]
        ids = torch.where(torch.arange(p, device=ids.device)[None] < self.prompt_lens[:, None], ids, pad)
        return PromptBatch(ids, self.prompt_lens, list(self.example_ids), self.vision, self.image_rows)

    def to(self, device: torch.device | str) -> DistillBatch:
        def mv(t):
            return None if t is None else t.to(device)
        return replace(
            self, input_ids=mv(self.input_ids), prompt_lens=mv(self.prompt_lens), seq_lens=mv(self.seq_lens),
            response_lens=mv(self.response_lens), gen_index=mv(self.gen_index), gen_valid=mv(self.gen_valid),
            tokens=mv(self.tokens), commit_step=mv(self.commit_step), block_steps=mv(self.block_steps),
            target=self.target.to(device), first_step=None if self.first_step is None else self.first_step.to(device),
            vision=mv(self.vision), image_rows=mv(self.image_rows), dropped=mv(self.dropped),
        )


def collate_records(records: list[TrajectoryRecord], pad_token_id: int | None = None) -> DistillBatch:
    """Pad records into a :class:`DistillBatch` (``pad_token_id`` defaults to the EOS id).

    Invariant: ``input_ids[b, gen_index[b, g]]`` is ``tokens[b, g]`` for ``g < response_lens[b]``
    and EOS after.
    """
    if not records:
        raise ValueError("cannot collate an empty list of records")
    r0 = records[0]
    for r in records[1:]:
        if (r.block_size, r.eos_token_id, r.target.vocab_size) != (r0.block_size, r0.eos_token_id, r0.target.vocab_size):
            raise ValueError(f"record {r.example_id!r} disagrees with {r0.example_id!r} on block size, EOS id or "
                             "vocabulary size")
    pad = r0.eos_token_id if pad_token_id is None else pad_token_id
    b = len(records)
    plen = torch.tensor([r.prompt_ids.shape[0] for r in records])
    glen = torch.tensor([r.num_generated for r in records])
    seq = plen + glen
    n, g_max = int(seq.max()), max(int(glen.max()), 1)
    ids = torch.full((b, n), pad, dtype=torch.long)
    gen_valid = torch.arange(g_max)[None] < glen[:, None]
    gen_index = torch.where(gen_valid, plen[:, None] + torch.arange(g_max)[None], plen[:, None])
    tokens = torch.full((b, g_max), pad, dtype=torch.long)
    step = torch.ones(b, g_max, dtype=torch.long)
    steps = torch.ones(b, g_max, dtype=torch.long)
    for i, r in enumerate(records):
        ids[i, : int(seq[i])] = r.clean_ids
        g = r.num_generated
        tokens[i, :g], step[i, :g], steps[i, :g] = r.tokens, r.commit_step, r.block_steps
    target = TokenDists.pad_stack([r.target for r in records], g_max)
    has_first = [r.first_step is not None for r in records]
    first = TokenDists.pad_stack([r.first_step for r in records], g_max) if all(has_first) else None
    vision, rows = collate_vision([(r.pixel_values, r.image_grid_thw) for r in records],
                                  [r.example_id for r in records])
    return DistillBatch(
        example_ids=[r.example_id for r in records], input_ids=ids, prompt_lens=plen, seq_lens=seq,
        response_lens=torch.tensor([r.response_len for r in records]), gen_index=gen_index, gen_valid=gen_valid,
        tokens=tokens, commit_step=step, block_steps=steps, target=target, block_size=r0.block_size,
        eos_token_id=r0.eos_token_id, first_step=first, vision=vision, image_rows=rows,
    )
