"""The block grid (DESIGN.md §2): blocks of ``L`` tokens aligned to clean index 0.

``block(i) = i // L``; with prompt length ``P`` the first block touching the response starts at
``s = (P // L) * L``, and the ``P - s`` prompt tokens inside it are the *prompt tail*; the clean
stream is padded with EOS to a block boundary. Every index computation over blocks (spans, block
counts, alignment, the shift read-out column) goes through these helpers; samplers, the
distillation code and the noise sampler never re-derive them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "block_id", "block_indices", "block_span", "clean_length", "decode_end", "generated_through",
    "on_block_boundary", "num_blocks", "padding_mask", "readout_column", "response_block_start", "tail_len",
]


def block_id(index: Tensor | int, block_size: int) -> Tensor | int:
    """Block of clean index ``index``: ``index // L`` (blocks aligned to index 0)."""
    return index // block_size


def response_block_start(prompt_len: Tensor | int, block_size: int) -> Tensor | int:
    """``s = (P // L) * L``: start of the first block that holds response tokens."""
    return (prompt_len // block_size) * block_size


def tail_len(prompt_len: Tensor | int, block_size: int) -> Tensor | int:
    """``P - s = P mod L``: prompt tokens inside the first response block (the prompt tail)."""
    return prompt_len - response_block_start(prompt_len, block_size)


def on_block_boundary(length: Tensor | int, block_size: int) -> Tensor | bool:
    """Whether a stream of ``length`` clean tokens ends on a block boundary."""
    return length % block_size == 0


def num_blocks(length: Tensor | int, block_size: int) -> Tensor | int:
    """``ceil(length / L)``: whole blocks that cover ``length`` positions starting on a boundary
    (e.g. ``num_blocks(tail + max_new_tokens, L)`` blocks decode ``max_new_tokens`` tokens)."""
    return -(-length // block_size)


def block_span(start: Tensor | int, k: Tensor | int, block_size: int, count: int = 1) -> tuple:
    """``(lo, hi)``: clean indices ``[lo, hi)`` of blocks ``k .. k + count - 1`` counted from the
    block that starts at ``start`` (``lo = start + k * L``, ``hi = lo + count * L``)."""
    lo = start + k * block_size
    return lo, lo + count * block_size


def block_indices(start: Tensor, k: int, block_size: int, count: int = 1) -> Tensor:
    """Long ``(B, count * L)``: the clean indices of :func:`block_span` for each row's ``start``
    (long ``(B,)``)."""
    lo, _ = block_span(start, k, block_size)
    return lo[:, None] + torch.arange(count * block_size, device=start.device)


def generated_through(k: int, tail: Tensor | int, block_size: int) -> Tensor | int:
    """Response tokens decoded once blocks ``0..k`` of the response are final (the first block
    starts with ``tail`` prompt tokens): ``(k + 1) * L - tail``."""
    return block_span(-tail, k, block_size)[1]


def decode_end(prompt_len: Tensor | int, max_new_tokens: int, block_size: int) -> Tensor | int:
    """Clean index after the last whole block that decoding ``max_new_tokens`` tokens touches."""
    tail = tail_len(prompt_len, block_size)
    lo, _ = block_span(response_block_start(prompt_len, block_size), num_blocks(tail + max_new_tokens, block_size),
                       block_size)
    return lo


def readout_column(position: Tensor | int, clean_slots: int, shift: bool) -> Tensor | int:
    """Query column whose logits predict block position ``position`` in a query laid out as
    ``[clean_slots clean tokens | the L noisy slots of the block]``, the clean slots ending
    right before the block. No shift: the position's own noisy slot ``clean_slots + position``.
    With ``shift`` (slot ``i - 1`` predicts token ``i``, as in
    :meth:`~blockdistill.layout.SlotLayout.prediction_slot`): one column earlier; ``-1`` (for
    position 0 without clean slots) means the logits of the last clean token before the
    block, which the query does not hold."""
    return clean_slots + position - int(shift)


def clean_length(prompt_len: Tensor | int, response_len: Tensor | int, block_size: int) -> Tensor | int:
    """Length ``n`` of the clean stream: prompt + response + at least one EOS, padded with EOS
    to the next block boundary. ``n = ceil((P + R + 1) / L) * L``."""
    return num_blocks(prompt_len + response_len + 1, block_size) * block_size


def padding_mask(lengths: Tensor, width: int) -> Tensor:
    """Bool ``(B, width)``: True on the first ``lengths[b]`` slots of each row (real tokens)."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
