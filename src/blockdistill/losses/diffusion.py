"""The masked block-diffusion loss (SDAR weighting) and the AR next-token loss.

``diffusion_loss = sum over masked positions of CE / p, divided by the number of maskable
tokens`` (DESIGN.md §2). Only masked positions go through the LM head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from blockdistill.losses.noise import Noise


def gather_targets(masked: Tensor, fill: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the True entries of ``masked`` ``(B, n)``, packed to ``(B, K)``.

    Returns ``(index, present)``; absent slots point at ``fill[b]`` (any valid response index)
    and have ``present`` False.
    """
    k = max(int(masked.sum(1).max()), 1)
    # Stable sort puts True positions first, in index order.
    order = torch.sort((~masked).to(torch.int8), dim=1, stable=True).indices[:, :k]
    present = masked.gather(1, order)
    return torch.where(present, order, fill[:, None].expand_as(order)), present


def weighted_ce(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """``sum(weights * CE(logits, labels))`` for ``logits`` ``(B, K, V)``, labels/weights ``(B, K)``."""
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(weights)
    return (ce * weights).sum()


def diffusion_loss(model, input_ids: Tensor, prompt_lens: Tensor, seq_lens: Tensor, maskable: Tensor,
                   noises: list[Noise], vision=None, layout: str = "rad") -> tuple[Tensor, dict[str, float]]:
    """SDAR-weighted masked CE for one or more noisings of the same batch (one forward).

    Args:
        model: a :class:`~blockdistill.models.adapter.BlockDiffusionLM`.
        input_ids, prompt_lens, seq_lens, maskable: the batch (see :class:`~blockdistill.data.Batch`).
        noises: e.g. ``[noise]`` or ``[noise, complement(noise)]``; each is one copy of the batch.
    Returns:
        ``(loss, stats)``: scalar loss normalised by the maskable-token count of all copies.
    """
    copies = len(noises)
    rep = lambda x: x.repeat(copies, *([1] * (x.dim() - 1)))  # noqa: E731
    masked = torch.cat([z.masked for z in noises])
    rate = torch.cat([z.rate for z in noises])
    ids = rep(input_ids)
    targets, present = gather_targets(masked, rep(prompt_lens))
    if vision is not None and copies > 1:
        from blockdistill.models.families import VisionInputs

        vision = VisionInputs(vision.pixel_values.repeat(copies, 1), vision.image_grid_thw.repeat(copies, 1))
    logits = model.diffusion_logits(ids, rep(prompt_lens), rep(seq_lens), masked, targets,
                                    vision=vision, layout=layout)
    labels = ids.gather(1, targets)
    weights = present.float() / rate.gather(1, targets)
    denom = maskable.sum().clamp(min=1) * copies
    loss = weighted_ce(logits, labels, weights) / denom
    with torch.no_grad():
        acc = ((logits.argmax(-1) == labels) & present).sum() / present.sum().clamp(min=1)
    return loss, {"masked_frac": float(masked.sum() / (maskable.sum() * copies).clamp(min=1)),
                  "masked_acc": float(acc)}


def response_positions(prompt_lens: Tensor, response_lens: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Clean indices ``(B, K)`` of each response token plus its first EOS, and a presence mask."""
    idx = torch.arange(width, device=prompt_lens.device)[None]
    want = (idx >= prompt_lens[:, None]) & (idx <= (prompt_lens + response_lens)[:, None])
    return gather_targets(want, prompt_lens)


def ar_loss(logits: Tensor, labels: Tensor, present: Tensor) -> Tensor:
    """Mean next-token CE over present positions. ``logits`` ``(B, K, V)`` at the *previous* index."""
    return weighted_ce(logits, labels, present.float()) / present.sum().clamp(min=1)
