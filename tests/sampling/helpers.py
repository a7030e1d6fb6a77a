"""Tiny backbones, prompt makers and brute-force references for the sampler tests.

Models are float64 so that equivalence tests compare exact argmax decisions without float
near-ties; random init uses range 0.1 (see blockdistill.testing.models) and every test that
claims an equivalence also checks that the outputs are diverse.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import torch

from blockdistill import BlockDiffusionLM, VisionInputs
from blockdistill.sampling import HFDenoiser
from blockdistill.testing import tiny_image_inputs, tiny_qwen2, tiny_qwen2_5_vl, tiny_tokenizer

VOCAB_WORDS = 80  # ordinary tokens t0..t79 of tiny_tokenizer


@cache
def text_bd() -> BlockDiffusionLM:
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4)
    bd.model.double()
    return bd


@cache
def vl_bd() -> BlockDiffusionLM:
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2_5_vl(), tiny_tokenizer(), block_size=4)
    bd.model.double()
    return bd


def variant(bd: BlockDiffusionLM, block_size: int, shift: bool, eos: int | list[int] | None = None,
            backend: str = "sdpa") -> BlockDiffusionLM:
    """The same weights under other block rules (the spec is only metadata for the samplers);
    ``eos`` an id or several (the first pads)."""
    spec = replace(bd.spec, block_size=block_size, shift=shift)
    spec = spec if eos is None else spec.with_eos(eos)
    return BlockDiffusionLM(bd.model, spec, attn_backend=backend)


def denoiser(bd: BlockDiffusionLM, block_size: int, shift: bool, eos: int | None = None) -> HFDenoiser:
    return HFDenoiser(variant(bd, block_size, shift, eos))


def random_prompts(lens: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, max len)`` prompts of ordinary tokens, and their lengths."""
    g = torch.Generator().manual_seed(seed)
    width = max(lens)
    ids = torch.full((len(lens), width), text_bd().spec.pad_token_id, dtype=torch.long)
    for b, n in enumerate(lens):
        ids[b, :n] = torch.randint(0, VOCAB_WORDS, (n,), generator=g)
    return ids, torch.tensor(lens)


def image_prompt(bd: BlockDiffusionLM, before: int, after: int, seed: int = 0) -> list[int]:
    """``before`` text tokens, one image (vision start, pads, end), then ``after`` text tokens."""
    cfg = bd.model.config
    _, _, n_pad = tiny_image_inputs(bd.model)
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(0, VOCAB_WORDS, (before + after,), generator=g).tolist()
    return (words[:before] + [cfg.vision_start_token_id] + [cfg.image_token_id] * n_pad
            + [cfg.vision_end_token_id] + words[before:])


def images(bd: BlockDiffusionLM, n: int, seed: int = 0) -> VisionInputs:
    pv, thw, _ = tiny_image_inputs(bd.model, num_images=n, seed=seed)
    return VisionInputs(pv.double(), thw)


def pad_rows(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r)
    return ids, torch.tensor([len(r) for r in rows])


def as_lists(out) -> list[list[int]]:
    return [s.tolist() for s in out.sequences]


def pick_eos(outputs: list[list[int]], exclude: set[int] = frozenset()) -> int:
    """A token that ends the rows of ``outputs`` at different places (or not at all), so that a
    batch with it as EOS has rows stopping at different times."""
    def score(t: int) -> tuple[int, int, int]:
        firsts = [r.index(t) for r in outputs if t in r]
        distinct = len(set(firsts)) + (len(firsts) < len(outputs))
        return distinct, len(firsts), -sum(firsts)

    cands = {t for r in outputs for t in r[1:]} - set(exclude)
    return max(sorted(cands), key=score)


@torch.no_grad()
def reference_block_decode(bd: BlockDiffusionLM, prompt: list[int], max_new: int, tau: float | None,
                           vision: VisionInputs | None = None) -> list[int]:
    """Brute force, one row, no cache: every step runs the *training* RAD forward
    (``diffusion_logits``) on ``prompt + finished blocks + current block`` and commits by the
    threshold rule written out here (``tau=None``: one step, everything at its argmax).
    No stop at EOS. Independent of the sampler's query, cache and policy code."""
    L, mask = bd.spec.block_size, bd.spec.mask_token_id
    p = len(prompt)
    seq = list(prompt)
    s = (p // L) * L
    k = 0
    while len(seq) - p < max_new:
        lo = s + k * L
        block_len = lo + L
        seq += [mask] * (block_len - len(seq))
        masked = [i for i in range(lo, block_len) if i >= p]
        while masked:
            ids = torch.tensor([seq])
            m = torch.zeros(1, block_len, dtype=torch.bool)
            m[0, masked] = True
            logits = bd.diffusion_logits(ids, torch.tensor([p]), torch.tensor([block_len]), m,
                                         torch.tensor([masked]), vision=vision)[0]
            logits[:, mask] = float("-inf")
            probs = torch.softmax(logits, -1)
            conf, tok = probs.max(-1)
            if tau is None:
                chosen = list(range(len(masked)))
            else:
                chosen = [j for j in range(len(masked)) if conf[j] > tau] or [int(conf.argmax())]
            for j in chosen:
                seq[masked[j]] = int(tok[j])
            masked = [i for j, i in enumerate(masked) if j not in chosen]
        k += 1
    return seq[p:p + max_new]
