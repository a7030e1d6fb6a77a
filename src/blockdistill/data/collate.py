"""Examples and batches: (prompt ids, response ids, optional vision inputs) -> padded clean streams.

The collator is where the clean-stream rule of DESIGN.md §2 becomes tensors: the response
ends with EOS and is padded with EOS to the next block boundary; anything beyond is batch
padding (``pad_token_id``), which is never attended to nor counted in a loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from blockdistill.data.checks import record_name
from blockdistill.data.vision import collate_vision
from blockdistill.layout import clean_length, padding_mask
from blockdistill.models.families import VisionInputs


@dataclass
class Batch:
    """A padded batch of clean streams. ``n`` below is ``input_ids.shape[1]``."""

    input_ids: Tensor
    """Long ``(B, n)``: prompt + response + EOS padding to a block boundary, then batch padding."""
    prompt_lens: Tensor
    """Long ``(B,)``: prompt length P of each row."""
    response_lens: Tensor
    """Long ``(B,)``: response length R (without EOS)."""
    seq_lens: Tensor
    """Long ``(B,)``: clean length ``ceil((P + R + 1) / L) * L``."""
    vision: VisionInputs | None = None
    """Vision inputs of the whole batch, images in row order."""
    image_rows: Tensor | None = None
    """Long ``(num_images,)``: the row each image belongs to."""
    meta: list[dict[str, Any]] = field(default_factory=list)
    """Per-row extras passed through untouched (ids, labels, language, ...)."""

    @property
    def valid(self) -> Tensor:
        """Bool ``(B, n)``: real tokens (not batch padding)."""
        return padding_mask(self.seq_lens, self.input_ids.shape[1])

    def maskable(self) -> Tensor:
        """Bool ``(B, n)``: response and EOS-padding positions, the only ones ever masked."""
        idx = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)[None]
        return (idx >= self.prompt_lens[:, None]) & (idx < self.seq_lens[:, None])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.prompt_lens.to(device), self.response_lens.to(device),
                     self.seq_lens.to(device), None if self.vision is None else self.vision.to(device),
                     None if self.image_rows is None else self.image_rows.to(device), self.meta)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class BlockCollator:
    """Collate examples ``{"prompt_ids", "response_ids", ["pixel_values", "image_grid_thw"], ...}``.

    Invariant: every row's clean length is a multiple of ``block_size`` and holds at least one EOS
    after the response. Too-long or empty examples raise; nothing is truncated silently.
    """

    VISION_KEYS = ("pixel_values", "image_grid_thw")

    def __init__(self, block_size: int, eos_token_id: int, pad_token_id: int | None = None,
                 max_length: int | None = None) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.eos = eos_token_id
        self.pad = eos_token_id if pad_token_id is None else pad_token_id
        self.max_length = max_length

    def __call__(self, examples: list[dict[str, Any]]) -> Batch:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        prompts = [torch.as_tensor(e["prompt_ids"], dtype=torch.long).reshape(-1) for e in examples]
        responses = [torch.as_tensor(e["response_ids"], dtype=torch.long).reshape(-1) for e in examples]
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if p.numel() == 0:
                raise ValueError(f"{record_name(examples[i], i)} has an empty prompt")
            if r.numel() == 0:
                raise ValueError(f"{record_name(examples[i], i)} has an empty response; every response needs at "
                                 "least one token")
        plen = torch.tensor([p.numel() for p in prompts])
        rlen = torch.tensor([r.numel() for r in responses])
        n = clean_length(plen, rlen, self.block_size)
        if self.max_length is not None and int(n.max()) > self.max_length:
            i = int(n.argmax())
            raise ValueError(f"{record_name(examples[i], i)} has {int(n[i])} tokens (prompt {int(plen[i])} + response {int(rlen[i])} "
                             f"+ EOS block padding) but the maximum length is {self.max_length}")
        width = int(n.max())
        ids = torch.full((len(examples), width), self.pad, dtype=torch.long)
        for b, (p, r) in enumerate(zip(prompts, responses)):
            ids[b, : p.numel()] = p
            ids[b, p.numel(): p.numel() + r.numel()] = r
            ids[b, p.numel() + r.numel(): int(n[b])] = self.eos
        vision, rows = collate_vision([(e.get("pixel_values"), e.get("image_grid_thw")) for e in examples])
        meta = [{k: v for k, v in e.items() if k not in ("prompt_ids", "response_ids", *self.VISION_KEYS)}
                for e in examples]
        return Batch(ids, plen, rlen, n, vision, rows, meta)
