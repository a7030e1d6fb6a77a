"""Noising of response tokens for the block-diffusion loss (DESIGN.md §2, SDAR default).

``t ~ U(0, 1)`` per example (or per block), ``p = (1 - eps) * t + eps``; each maskable token
(response + EOS padding, never the prompt) is masked with probability ``p``, with at least one
masked token per example. Complementary masks (Fast-dLLM v2) pair each mask with its
complement over the maskable tokens, so every token is supervised exactly once per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from blockdistill.layout import num_blocks


@dataclass
class Noise:
    """A sampled noising of a batch; all ``(B, n)``."""

    masked: Tensor
    """Bool: position is replaced by the mask token in the noisy copy."""
    rate: Tensor
    """Float: the mask probability ``p`` the position was drawn with (its loss weight is ``1 / p``)."""


def sample_noise(maskable: Tensor, block_size: int, eps: float = 1e-3, per_block: bool = False,
                 generator: torch.Generator | None = None) -> Noise:
    """Draw a mask over ``maskable`` ``(B, n)`` positions.

    Invariant: ``masked`` ⊆ ``maskable`` and every row with a maskable token has >= 1 masked.
    """
    b, n = maskable.shape
    dev = maskable.device
    if per_block:
        nb = num_blocks(n, block_size)
        t = torch.rand(b, nb, generator=generator, device=dev).repeat_interleave(block_size, 1)[:, :n]
    else:
        t = torch.rand(b, 1, generator=generator, device=dev).expand(b, n)
    p = (1 - eps) * t + eps
    masked = (torch.rand(b, n, generator=generator, device=dev) < p) & maskable
    # At least one masked token per example: force a uniformly chosen maskable position.
    empty = ~masked.any(1) & maskable.any(1)
    if bool(empty.any()):
        scores = torch.rand(b, n, generator=generator, device=dev).masked_fill(~maskable, -1.0)
        pick = scores.argmax(1)
        masked[empty, pick[empty]] = True
    return Noise(masked, p.contiguous())


def complement(noise: Noise, maskable: Tensor, eps: float = 1e-3) -> Noise:
    """The complementary mask over ``maskable`` with rate ``1 - p`` (clamped to ``eps``)."""
    return Noise(maskable & ~noise.masked, (1 - noise.rate).clamp(min=eps))
