"""The AR baseline: greedy decoding with a KV cache, one token per forward, on the same
backbone the block samplers use (so speed ratios are honest). Matches the backbone's own
``generate(do_sample=False)`` token for token (the ``[MASK]`` token is never emitted).

Example::

    out = ar_generate(bd, prompt_ids, prompt_lens, max_new_tokens=128)
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from blockdistill.layout import SlotLayout, clean_layout, padding_mask
from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.common import check_prompts, device_sync, finish_sequence
from blockdistill.sampling.output import GenerationOutput, GenerationStats
from blockdistill.sampling.policies import proposals

__all__ = ["ar_generate", "ar_step"]

_SLICEABLE = ("sdpa", "eager")  # dense masks: one render for all steps, sliced per step


@torch.no_grad()
def ar_generate(model: BlockDiffusionLM, prompt_ids: Tensor, prompt_lens: Tensor,
                vision: VisionInputs | None = None, *, max_new_tokens: int = 128,
                stop_at_eos: bool = True) -> GenerationOutput:
    """Greedy AR decoding.

    Args:
        model: the backbone (its causal attention is the block rule with ``L = 1``).
        prompt_ids: long ``(B, P)``, right-padded; prompt_lens: long ``(B,)`` in ``[1, P]``.
        vision: vision inputs of the prompts (prefilled once).
        max_new_tokens: tokens per row at most (``>= 1``).
        stop_at_eos: stop a row at its first EOS (kept in the output); False forces
            ``max_new_tokens`` tokens.
    Returns:
        :class:`GenerationOutput`; ``stats.nfe`` counts the prefill and one forward per step.
    """
    spec = model.spec
    check_prompts(prompt_ids, prompt_lens, max_new_tokens, 1, model.max_context)
    sync = device_sync(prompt_ids.device)
    t0 = time.perf_counter()
    dev = prompt_ids.device
    b0, p = prompt_ids.shape
    prompt_lens = prompt_lens.to(dev)
    decoder_emb = model.family.input_embeddings(model.model)

    # One layout for the whole run: [prompt slots (P) | generated slots (M)], causal (L = 1).
    m = max_new_tokens
    gen_idx = prompt_lens[:, None] + torch.arange(m, device=dev)
    pre = clean_layout(prompt_lens, 1, width=p)
    lay = SlotLayout(torch.cat([pre.clean_index, gen_idx], 1), torch.zeros(b0, p + m, dtype=torch.bool, device=dev),
                     torch.cat([pre.valid, torch.ones(b0, m, dtype=torch.bool, device=dev)], 1), 1, p + m)

    valid = padding_mask(prompt_lens, p)
    emb = model.embed(prompt_ids, vision)
    pos, delta = model.positions(prompt_ids, valid, vision)
    cache = model.new_cache()
    hidden = model.run(emb, pos, pre, cache=cache)
    rows_all = torch.arange(b0, device=dev)
    logits = model.logits(hidden[rows_all, prompt_lens - 1])
    sync()
    prefill_s = time.perf_counter() - t0

    step_masks = None
    if model.attn_backend in _SLICEABLE:
        step_masks = model.render_mask(lay, emb.dtype, num_queries=m)  # (B, 1, M, P+M), or one per layer type
    origin = rows_all
    out = torch.full((b0, m), spec.pad_token_id, dtype=torch.long, device=dev)
    results: dict[int, Tensor] = {}
    nfe, row_forwards = 1, 0
    for t in range(m):
        tok, _ = proposals(logits, spec.mask_token_id, needs_confidence=False)
        out[:, t] = tok
        done = torch.full_like(tok, t + 1 >= m, dtype=torch.bool)
        if stop_at_eos:
            done = done | spec.is_eos(tok)
        if bool(done.any()):
            is_eos = spec.is_eos if stop_at_eos else None
            for a in done.nonzero()[:, 0].tolist():
                results[int(origin[a])] = finish_sequence(out[a, : t + 1], m, is_eos)
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            origin, tok, out, delta, gen_idx = origin[keep], tok[keep], out[keep], delta[keep], gen_idx[keep]
            lay = SlotLayout(lay.clean_index[keep], lay.noisy[keep], lay.valid[keep], 1, p + m)
            cache.batch_select_indices(keep)
            if step_masks is not None:
                step_masks = _each(step_masks, lambda x, k=keep: x[k])
        index = gen_idx[:, t: t + 1]
        if step_masks is not None:
            mask = _each(step_masks, lambda x, t=t: x[:, :, t: t + 1, : p + t + 1])
        else:
            sub = SlotLayout(lay.clean_index[:, : p + t + 1], lay.noisy[:, : p + t + 1], lay.valid[:, : p + t + 1], 1, p + t + 1)
            mask = model.render_mask(sub, emb.dtype, num_queries=1)
        logits = ar_step(model, decoder_emb, tok, index, delta, cache, mask)
        nfe += 1
        row_forwards += tok.shape[0]

    sync()
    wall = time.perf_counter() - t0
    seqs = [results[r] for r in range(b0)]
    lengths = [int(s.shape[0]) for s in seqs]
    stats = GenerationStats(nfe=nfe, nfe_decode=nfe - 1, row_forwards=row_forwards, generated_tokens=sum(lengths),
                            lengths=lengths, wall_s=wall, prefill_s=prefill_s)
    return GenerationOutput(seqs, stats)


def ar_step(model: BlockDiffusionLM, embed, tok: Tensor, index: Tensor, delta: Tensor, cache, mask) -> Tensor:
    """One AR decode step, the forward :func:`ar_generate` runs per token (and the one
    :func:`blockdistill.evaluation.forward_cost_limit` times as ``t(1)``): the tokens ``tok``
    ``(B,)`` at clean indices ``index`` ``(B, 1)`` appended to ``cache``, ``mask`` the step's
    pre-rendered mask, ``embed`` the decoder's input embeddings. Returns float ``(B, V)`` logits."""
    hidden = model.run(embed(tok[:, None]), model.family.text_positions(index, delta), None,
                       num_queries=1, cache=cache, attn_mask=mask)
    return model.logits(hidden[:, 0])


def _each(mask, fn):
    """``fn`` on a mask, or on each layer type's mask of a ``{layer type: mask}`` mapping."""
    return {t: fn(m) for t, m in mask.items()} if isinstance(mask, dict) else fn(mask)
