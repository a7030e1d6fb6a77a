"""The one definition of the block grid and the attention rules (DESIGN.md §2).

Training (RAD and full duplication), distillation and every sampler describe the tokens they
feed to the backbone as *slots*: each slot stands for a clean-stream index, is either clean or
noisy, and is either a real token or batch padding. :func:`attends` is the single rule that
decides who may attend to whom; the dense boolean mask, the additive float mask and the
flex_attention ``mask_mod`` are all views of it. Nothing else in the library re-derives block
ids or attention rules.

Grid: blocks of ``L`` tokens aligned to clean index 0, ``block(i) = i // L``. With prompt length
``P``, the first block touching the response starts at ``s = (P // L) * L``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from blockdistill.layout.grid import padding_mask, response_block_start

__all__ = [
    "SlotLayout",
    "additive_mask",
    "attends",
    "clean_layout",
    "dense_mask",
    "flex_block_mask",
    "TRAINING_LAYOUTS",
    "full_dup_layout",
    "mask_mod",
    "rad_layout",
    "training_layout",
]


def attends(
    q_index: Tensor,
    q_noisy: Tensor,
    q_valid: Tensor,
    q_slot: Tensor,
    k_index: Tensor,
    k_noisy: Tensor,
    k_valid: Tensor,
    k_slot: Tensor,
    block_size: int,
    window: int | None = None,
) -> Tensor:
    """The attention rule. All arguments broadcast together; returns bool "query may see key".

    - a clean query sees clean keys of its own or earlier blocks (block-causal, bidirectional
      inside a block);
    - a noisy query sees clean keys of strictly earlier blocks and noisy keys of its own block;
    - clean queries never see noisy keys; batch padding is never seen;
    - a padding query sees only itself, so no softmax row is empty (its output is ignored);
    - ``window`` (a sliding-window layer's ``sliding_window``): besides, a query at clean index
      ``i`` sees only keys at ``j > i - window``, HF's own sliding-window rule
      (``kv_idx > q_idx - sliding_window``) on clean indices; keys after ``i`` (its own block)
      are unaffected.

    ``*_index`` are clean-stream indices, ``*_slot`` physical slot numbers (for the padding
    self-edge). Written with ``~(a ^ b)`` instead of ``==`` on booleans so that
    ``torch.compile(create_block_mask)`` can trace it.
    """
    bq = q_index // block_size
    bk = k_index // block_size
    q_clean = ~q_noisy
    k_clean = ~k_noisy
    from_clean = q_clean & k_clean & (bk <= bq)
    from_noisy = q_noisy & ((k_clean & (bk < bq)) | (k_noisy & (bk == bq)))
    real = q_valid & k_valid & (from_clean | from_noisy)
    if window is not None:
        real = real & (k_index > q_index - window)
    return real | (~q_valid & (q_slot == k_slot))


@dataclass(frozen=True)
class SlotLayout:
    """Slots of a batch fed to the backbone, all ``(B, T)``.

    Invariant: slot ``t`` of row ``b`` stands for clean index ``clean_index[b, t]``; position ids
    and block ids are always derived from that clean index, never from ``t``.
    """

    clean_index: Tensor
    """Long ``(B, T)``: clean-stream index each slot stands for (0 on padding)."""
    noisy: Tensor
    """Bool ``(B, T)``: slot belongs to the noisy copy."""
    valid: Tensor
    """Bool ``(B, T)``: slot holds a real token, not batch padding."""
    block_size: int
    """L."""
    clean_width: int
    """Number of leading slots that form the clean section (``max n`` over the batch)."""
    noisy_start: Tensor | None = None
    """Long ``(B,)``: first clean index copied into the noisy section (``s`` for RAD, 0 for
    full duplication); None for a clean-only layout."""

    @property
    def num_slots(self) -> int:
        return self.clean_index.shape[1]

    def noisy_slot(self, clean_index: Tensor) -> Tensor:
        """Slot of the noisy twin of ``clean_index`` (``(B, K)`` long, row-wise)."""
        if self.noisy_start is None:
            raise ValueError("this layout has no noisy section")
        return self.clean_width + clean_index - self.noisy_start[:, None]

    def prediction_slot(self, clean_index: Tensor, shift: bool) -> Tensor:
        """Slot whose logits predict the token at noisy ``clean_index`` (``(B, K)``).

        No shift: the noisy twin itself. With ``shift``: the slot of ``i - 1``; that is its noisy
        twin when ``i - 1`` is in the same block, else the clean slot ``i - 1`` (the last token
        of the previous block, which saw exactly the earlier blocks).
        """
        if not shift:
            return self.noisy_slot(clean_index)
        prev = clean_index - 1
        same_block = (prev // self.block_size) == (clean_index // self.block_size)
        if bool((prev < 0).any()):
            raise ValueError("with shift=True, clean index 0 has no predecessor to predict it")
        return torch.where(same_block, self.noisy_slot(prev.clamp(min=0)), prev)

    def positions(self, clean_positions: Tensor) -> Tensor:
        """Gather per-slot position ids from clean-stream ones.

        ``clean_positions`` is ``(B, n)`` (1-D RoPE) or ``(R, B, n)`` (e.g. Qwen2.5-VL M-RoPE,
        R=3); the result has the same leading dims and ``T`` slots. Each noisy slot reuses the
        position of its clean twin.
        """
        idx = self.clean_index.clamp(max=clean_positions.shape[-1] - 1)
        if clean_positions.dim() == 2:
            return clean_positions.gather(1, idx)
        return clean_positions.gather(2, idx[None].expand(clean_positions.shape[0], -1, -1))


def clean_layout(seq_lens: Tensor, block_size: int, width: int | None = None) -> SlotLayout:
    """Clean stream only: slot ``t`` is clean index ``t``; rows right-padded to ``width``."""
    width = int(seq_lens.max()) if width is None else width
    b = seq_lens.shape[0]
    idx = torch.arange(width, device=seq_lens.device).expand(b, width)
    valid = padding_mask(seq_lens, width)
    return SlotLayout(idx.masked_fill(~valid, 0), torch.zeros_like(valid), valid, block_size, width)


def _dup_layout(seq_lens: Tensor, noisy_start: Tensor, block_size: int, width: int | None) -> SlotLayout:
    width = int(seq_lens.max()) if width is None else width
    clean = clean_layout(seq_lens, block_size, width)
    noisy_len = seq_lens - noisy_start
    m = int(noisy_len.max())
    j = torch.arange(m, device=seq_lens.device)[None, :]
    n_valid = j < noisy_len[:, None]
    n_idx = (noisy_start[:, None] + j).masked_fill(~n_valid, 0)
    return SlotLayout(
        clean_index=torch.cat([clean.clean_index, n_idx], 1),
        noisy=torch.cat([clean.noisy, torch.ones_like(n_valid)], 1),
        valid=torch.cat([clean.valid, n_valid], 1),
        block_size=block_size,
        clean_width=width,
        noisy_start=noisy_start,
    )


def rad_layout(prompt_lens: Tensor, seq_lens: Tensor, block_size: int, width: int | None = None) -> SlotLayout:
    """RAD: ``[clean stream (n) | noisy copy of clean indices s..n-1]``, ``s = (P // L) * L``.

    The prompt (and its image tokens) appears once; ``n + (n - s)`` slots per row.
    """
    return _dup_layout(seq_lens, response_block_start(prompt_lens, block_size), block_size, width)


def full_dup_layout(seq_lens: Tensor, block_size: int, width: int | None = None) -> SlotLayout:
    """Full duplication (BD3-LM / SDAR / Fast-dLLM v2): ``[clean stream | noisy copy of all of it]``."""
    return _dup_layout(seq_lens, torch.zeros_like(seq_lens), block_size, width)


TrainingLayout = Callable[..., SlotLayout]
"""``(prompt_lens, seq_lens, block_size, width) -> SlotLayout`` of a training sequence."""

TRAINING_LAYOUTS: dict[str, TrainingLayout] = {
    "rad": rad_layout,
    "full_dup": lambda prompt_lens, seq_lens, block_size, width=None: full_dup_layout(seq_lens, block_size, width),
}
"""Training layouts by config name (``RADTrainConfig.layout``): ``rad`` (noisy copy from the
response's block) and ``full_dup`` (noisy copy of everything, the baseline). A new layout is one
more entry; configs validate against this dict."""


def training_layout(name: str, prompt_lens: Tensor, seq_lens: Tensor, block_size: int,
                    width: int | None = None) -> SlotLayout:
    """The layout registered as ``name`` in :data:`TRAINING_LAYOUTS`; ``ValueError`` naming them."""
    if name not in TRAINING_LAYOUTS:
        raise ValueError(f"layout must be one of {tuple(TRAINING_LAYOUTS)}, got {name!r}")
    return TRAINING_LAYOUTS[name](prompt_lens, seq_lens, block_size, width)


def dense_mask(layout: SlotLayout, num_queries: int | None = None, window: int | None = None) -> Tensor:
    """Bool ``(B, 1, Q, T)`` mask (True = attend) for the last ``Q`` slots as queries over all
    ``T`` slots as keys (``Q = T`` by default; fewer when earlier slots are a KV cache);
    ``window``: a sliding-window layer's (see :func:`attends`)."""
    t = layout.num_slots
    q = t if num_queries is None else num_queries
    qs = slice(t - q, t)
    slots = torch.arange(t, device=layout.clean_index.device)
    m = attends(
        layout.clean_index[:, qs, None], layout.noisy[:, qs, None], layout.valid[:, qs, None], slots[qs, None],
        layout.clean_index[:, None, :], layout.noisy[:, None, :], layout.valid[:, None, :], slots[None, :],
        layout.block_size, window,
    )
    return m[:, None]


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Float mask: 0 where ``mask`` is True, the dtype's minimum elsewhere.

    Needed for ``eager`` attention, where a boolean 4-D mask is silently misread.
    """
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def mask_mod(layout: SlotLayout, num_queries: int | None = None,
             window: int | None = None) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """flex_attention ``mask_mod(b, h, q, kv)`` for the same rule as :func:`dense_mask`."""
    t = layout.num_slots
    off = t - (t if num_queries is None else num_queries)
    ci, nz, va = layout.clean_index, layout.noisy, layout.valid
    size = layout.block_size

    def mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        qs = q + off
        return attends(ci[b, qs], nz[b, qs], va[b, qs], qs, ci[b, kv], nz[b, kv], va[b, kv], kv, size, window)

    return mod


def flex_block_mask(layout: SlotLayout, num_queries: int | None = None, compile: bool = False,
                    window: int | None = None):
    """A flex_attention ``BlockMask`` for :func:`mask_mod`. Cache it per shape: building it costs."""
    from torch.nn.attention.flex_attention import create_block_mask

    t = layout.num_slots
    q = t if num_queries is None else num_queries
    fn = torch.compile(create_block_mask) if compile else create_block_mask
    return fn(mask_mod(layout, num_queries, window), layout.clean_index.shape[0], None, q, t,
              device=layout.clean_index.device)
