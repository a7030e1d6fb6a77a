"""Prompts to decode: reading them (JSONL with stable ids) and batching them.

Both collection modes consume :class:`PromptBatch`. Example ids key resumption and
deduplication of offline collection, so they must be stable across runs: a JSONL row's
``id`` field, else its 0-based line number among the non-empty lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from blockdistill.data.checks import BadExampleError, jsonl_objects
from blockdistill.data.vision import collate_vision
from blockdistill.models.families import VisionInputs

__all__ = ["PromptBatch", "collate_prompts", "read_prompts"]


def read_prompts(path: str | Path, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Rows ``{"id", "prompt_ids"}`` from JSONL with ``prompt`` (text, needs ``tokenizer``) or
    ``prompt_ids``; other keys (e.g. a reference ``response``) are ignored. Bad lines raise with
    their number; duplicate ids raise."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, row in jsonl_objects(path):
        if "prompt_ids" in row:
            ids = [int(t) for t in row["prompt_ids"]]
        elif "prompt" in row:
            if tokenizer is None:
                raise ValueError(f"{path}:{lineno}: text prompts need a tokenizer (data.tokenizer)")
            ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        else:
            raise BadExampleError(f"{path}:{lineno}: expected a 'prompt' or 'prompt_ids' key, got {sorted(row)}")
        ex = str(row.get("id", len(rows)))
        if ex in seen:
            raise BadExampleError(f"{path}:{lineno}: duplicate id {ex!r}")
        seen.add(ex)
        rows.append({"id": ex, "prompt_ids": ids})
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


@dataclass
class PromptBatch:
    """Prompts to decode: what both collection modes consume."""

    prompt_ids: Tensor
    """Long ``(B, P)``, right-padded."""
    prompt_lens: Tensor
    """Long ``(B,)``."""
    example_ids: list[str]
    """Stable id of each row."""
    vision: VisionInputs | None = None
    """Vision inputs, images in row order."""
    image_rows: Tensor | None = None
    """Long ``(num_images,)``: row of each image."""
    skip: Tensor | None = None
    """Bool ``(B,)``: placeholder rows (padding a data set to the world size); never recorded."""

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> PromptBatch:
        def mv(t):
            return None if t is None else t.to(device)
        return PromptBatch(mv(self.prompt_ids), mv(self.prompt_lens), self.example_ids, mv(self.vision),
                           mv(self.image_rows), mv(self.skip))

    def row_vision(self, b: int) -> tuple[Tensor | None, Tensor | None]:
        """``(pixel_values, image_grid_thw)`` of row ``b`` (None, None without images)."""
        if self.vision is None or self.image_rows is None or not bool((self.image_rows == b).any()):
            return None, None
        v = self.vision.select([b], self.image_rows)
        return v.pixel_values, v.image_grid_thw


def collate_prompts(examples: Sequence[dict], pad_token_id: int) -> PromptBatch:
    """Examples ``{"id", "prompt_ids", ["pixel_values", "image_grid_thw"], ["skip"]}`` -> :class:`PromptBatch`."""
    if not examples:
        raise ValueError("cannot collate an empty list of prompts")
    prompts = [torch.as_tensor(e["prompt_ids"], dtype=torch.long).reshape(-1) for e in examples]
    for e, p in zip(examples, prompts):
        if p.numel() == 0:
            raise ValueError(f"example {e.get('id')!r} has an empty prompt")
    lens = torch.tensor([p.numel() for p in prompts])
    ids = torch.full((len(prompts), int(lens.max())), pad_token_id, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, : p.numel()] = p
    vision, rows = collate_vision([(e.get("pixel_values"), e.get("image_grid_thw")) for e in examples],
                                  [str(e.get("id", b)) for b, e in enumerate(examples)])
    skip = torch.tensor([bool(e.get("skip", False)) for e in examples])
    return PromptBatch(ids, lens, [str(e["id"]) for e in examples], vision, rows, skip)
