"""Batch vision inputs: each row's images (Qwen2.5-VL's ``pixel_values`` and ``image_grid_thw``)
concatenated in row order, with the row each image belongs to.

The one helper every batch type uses (training examples, prompts to decode, trajectory records),
so the convention of :class:`~blockdistill.models.families.VisionInputs` and its checks live in
one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from blockdistill.models.families import VisionInputs

__all__ = ["collate_vision"]


def collate_vision(images: Sequence[tuple[Tensor | None, Tensor | None]],
                   names: Sequence[str] | None = None) -> tuple[VisionInputs | None, Tensor | None]:
    """Per-row ``(pixel_values, image_grid_thw)`` -> ``(vision, image_rows)`` of the batch.

    Args:
        images: one pair per row; ``(None, None)`` for a row without images. ``pixel_values`` is
            ``(patches, D)``, ``image_grid_thw`` ``(images, 3)`` (or a flat list of triples).
        names: how errors name each row (its example id); default ``example <row>``.
    Returns:
        ``(VisionInputs, image_rows)``: pixel values and grids concatenated in row order, and long
        ``(num_images,)`` the row of each image; ``(None, None)`` when no row has images.
    Raises:
        ValueError naming the row: pixel values without a grid (or the reverse), or a grid whose
        patch count ``sum(t * h * w)`` differs from the rows of ``pixel_values``.
    """
    pix, thw, rows = [], [], []
    for b, (pv, grid) in enumerate(images):
        name = f"example {names[b]!r}" if names is not None else f"example {b}"
        if pv is None and grid is None:
            continue
        if pv is None or grid is None:
            raise ValueError(f"{name}: has {'image_grid_thw' if pv is None else 'pixel_values'} "
                             f"but no {'pixel_values' if pv is None else 'image_grid_thw'}")
        g = torch.as_tensor(grid, dtype=torch.long).reshape(-1, 3)
        pv = torch.as_tensor(pv)
        if int(g.prod(-1).sum()) != pv.shape[0]:
            raise ValueError(f"{name}: image_grid_thw {g.tolist()} implies {int(g.prod(-1).sum())} "
                             f"patches but pixel_values has {pv.shape[0]}")
        pix.append(pv)
        thw.append(g)
        rows += [b] * g.shape[0]
    if not pix:
        return None, None
    return VisionInputs(torch.cat(pix), torch.cat(thw)), torch.tensor(rows, dtype=torch.long)
