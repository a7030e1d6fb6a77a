"""The block grid (DESIGN.md §2): blocks of ``L`` tokens aligned to clean index 0.

``block(i) = i // L``; with prompt length ``P`` the first block touching the response starts at
``s = (P // L) * L``; the clean stream is padded with EOS to a block boundary. Every index
computation over blocks goes through these helpers.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["block_id", "clean_length", "padding_mask", "response_block_start"]


def block_id(index: Tensor | int, block_size: int) -> Tensor | int:
    """Block of clean index ``index``: ``index // L`` (blocks aligned to index 0)."""
    return index // block_size


def response_block_start(prompt_len: Tensor | int, block_size: int) -> Tensor | int:
    """``s = (P // L) * L``: start of the first block that holds response tokens."""
    return (prompt_len // block_size) * block_size


def clean_length(prompt_len: Tensor | int, response_len: Tensor | int, block_size: int) -> Tensor | int:
    """Length ``n`` of the clean stream: prompt + response + at least one EOS, padded with EOS
    to the next block boundary. ``n = ceil((P + R + 1) / L) * L``."""
    return -(-(prompt_len + response_len + 1) // block_size) * block_size


def padding_mask(lengths: Tensor, width: int) -> Tensor:
    """Bool ``(B, width)``: True on the first ``lengths[b]`` slots of each row (real tokens)."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
