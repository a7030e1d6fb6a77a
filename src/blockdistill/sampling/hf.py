"""``HFDenoiser``: the :class:`~blockdistill.sampling.denoiser.Denoiser` protocol for a
:class:`~blockdistill.models.adapter.BlockDiffusionLM` (any registered family, Qwen2.5-VL included).

The context is a ``DynamicCache`` plus one slot descriptor per cached entry (clean index,
valid), so every mask is rendered from :func:`blockdistill.layout.attends` on
``[cache slots | query slots]``. Rendered masks are kept per state, keyed by
``(cache length, Q, append)``: within a state the cache only ever grows by whole blocks in clean
order, so that key fixes every slot's block relation (see :meth:`HFDenoiser.forward`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from blockdistill.layout import (
    SlotLayout,
    block_indices,
    clean_layout,
    padding_mask,
    response_block_start,
)
from blockdistill.models.adapter import BlockDiffusionLM, BlockSpec
from blockdistill.models.families import VisionInputs

__all__ = ["HFDenoiser", "HFState"]


@dataclass
class HFState:
    """Context of a batch being decoded by :class:`HFDenoiser`."""

    cache: Any
    """``DynamicCache`` with ``C`` entries per row."""
    index: Tensor
    """Long ``(B, C)``: clean index of each cache entry."""
    valid: Tensor
    """Bool ``(B, C)``: entry is a real token (rows with shorter prompts hold padding)."""
    delta: Tensor
    """Long ``(B, 1)``: text position offset (``family.text_positions(index, delta)``)."""
    prompt_lens: Tensor
    """Long ``(B,)``."""
    tail_start: Tensor
    """Long ``(B,)``: ``s_b``, first clean index of the first response block."""
    tail_emb: Tensor | None
    """Float ``(B, L, D)``: input embeddings of clean indices ``s_b .. s_b + L - 1`` of the prompt
    (vision features included); used for the prompt tail until the first block is appended."""
    tail_pos: Tensor | None
    """Position ids of those slots, ``(B, L)`` or ``(R, B, L)``."""
    masks: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.index.shape[1])


class HFDenoiser:
    """Drive a :class:`BlockDiffusionLM` as a :class:`Denoiser`.

    Invariant: cache entry ``c`` of row ``b`` holds the KV of clean index ``index[b, c]``,
    computed with the attention rule of :func:`blockdistill.layout.attends`.
    """

    def __init__(self, model: BlockDiffusionLM) -> None:
        self.model = model
        self.spec: BlockSpec = model.spec
        self._embed_tokens = model.family.input_embeddings(model.model)

    @property
    def max_context(self) -> int | None:
        return self.model.max_context

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self) -> Any:
        return self.model.new_cache()

    # ------------------------------------------------------------------ protocol
    @torch.no_grad()
    def prefill(self, prompt_ids: Tensor, prompt_lens: Tensor,
                vision: VisionInputs | None = None) -> tuple[HFState, Tensor | None]:
        bd, L = self.model, self.spec.block_size
        b, p = prompt_ids.shape
        valid_prompt = padding_mask(prompt_lens, p)
        emb = bd.embed(prompt_ids, vision)
        pos, delta = bd.positions(prompt_ids, valid_prompt, vision)
        start = response_block_start(prompt_lens, L)
        width = int(start.max())
        lay = clean_layout(start, L, width=width)
        cache = self.new_cache()
        last = None
        if width > 0:
            mask = bd.render_mask(lay, emb.dtype)
            hidden = bd.run(emb[:, :width], pos[..., :width], lay, cache=cache, attn_mask=mask)
            if self.spec.shift:
                at = (start - 1).clamp(min=0)
                last = bd.logits(hidden[torch.arange(b, device=hidden.device), at])
        elif self.spec.shift:
            last = torch.zeros(b, self._vocab_size(), device=emb.device)
        # The prompt tail (clean indices s_b .. P_b - 1) is sent by the sampler as the first
        # tokens of the first block; keep its embeddings and positions, which may hold image
        # features and M-RoPE ids that plain token embeddings cannot reproduce.
        rel = block_indices(start, 0, L).clamp(max=p - 1)
        tail_emb = emb.gather(1, rel[..., None].expand(-1, -1, emb.shape[-1]))
        tail_pos = pos.gather(-1, rel if pos.dim() == 2 else rel[None].expand(pos.shape[0], -1, -1))
        state = HFState(cache, lay.clean_index, lay.valid, delta, prompt_lens, start, tail_emb, tail_pos)
        return state, last

    @torch.no_grad()
    def forward(self, state: HFState, query_ids: Tensor, query_index: Tensor, append: int,
                logits_at: Tensor | None) -> Tensor | None:
        """See :meth:`Denoiser.forward`. The first ``append`` query slots are clean, the rest noisy.

        The rendered mask is reused for every call on this state with the same
        ``(cache length, Q, append)``: the cache grows only by whole blocks in clean order and
        the query is the next block(s), so that key fixes every slot's block relation.
        """
        bd = self.model
        b, q = query_ids.shape
        c = state.length
        emb = self._embed_tokens(query_ids)
        pos = bd.family.text_positions(query_index, state.delta)
        if state.tail_emb is not None:
            emb, pos = self._use_prompt_tail(state, query_index, emb, pos)
        key = (c, q, append)
        mask = state.masks.get(key)
        if mask is None:
            mask = state.masks[key] = bd.render_mask(self._layout(state, query_index, append), emb.dtype,
                                                     num_queries=q)
        hidden = bd.run(emb, pos, None, num_queries=q, cache=state.cache, attn_mask=mask)
        if append < q:
            state.cache.crop(-(q - append))
        if append:
            state.index = torch.cat([state.index, query_index[:, :append]], 1)
            state.valid = torch.cat([state.valid, state.valid.new_ones(b, append)], 1)
            state.tail_emb = state.tail_pos = None  # the first block, with the prompt tail, is cached now
        if logits_at is None:
            return None
        picked = hidden.gather(1, logits_at[..., None].expand(-1, -1, hidden.shape[-1]))
        return bd.logits(picked)

    def select_rows(self, state: HFState, rows: Tensor) -> HFState:
        if state.length:
            state.cache.batch_select_indices(rows)
            cache = state.cache
        else:  # HF skips empty layers, which would keep the old batch size: start afresh
            cache = self.new_cache()
        return HFState(
            cache=cache, index=state.index[rows], valid=state.valid[rows], delta=state.delta[rows],
            prompt_lens=state.prompt_lens[rows], tail_start=state.tail_start[rows],
            tail_emb=None if state.tail_emb is None else state.tail_emb[rows],
            tail_pos=None if state.tail_pos is None else state.tail_pos[..., rows, :],
        )

    # ------------------------------------------------------------------ helpers
    def _vocab_size(self) -> int:
        return int(self.model.family.lm_head(self.model.model).weight.shape[0])

    def _layout(self, state: HFState, query_index: Tensor, append: int) -> SlotLayout:
        b, q = query_index.shape
        noisy_q = torch.arange(q, device=query_index.device) >= append
        return SlotLayout(
            clean_index=torch.cat([state.index, query_index], 1),
            noisy=torch.cat([state.valid.new_zeros(b, state.length), noisy_q.expand(b, q)], 1),
            valid=torch.cat([state.valid, state.valid.new_ones(b, q)], 1),
            block_size=self.spec.block_size,
            clean_width=state.length + append,
        )

    def _use_prompt_tail(self, state: HFState, index: Tensor, emb: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        L = self.spec.block_size
        rel = (index - state.tail_start[:, None]).clamp(0, L - 1)
        use = index < state.prompt_lens[:, None]
        emb = torch.where(use[..., None], state.tail_emb.gather(1, rel[..., None].expand(-1, -1, emb.shape[-1])), emb)
        if pos.dim() == 2:
            pos = torch.where(use, state.tail_pos.gather(1, rel), pos)
        else:
            r = pos.shape[0]
            pos = torch.where(use[None], state.tail_pos.gather(2, rel[None].expand(r, -1, -1)), pos)
        return emb, pos
