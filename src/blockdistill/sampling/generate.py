"""``generate``: the block samplers behind transformers' calling conventions.

    out = generate(bd, input_ids, attention_mask, pixel_values=pv, image_grid_thw=grid,
                   max_new_tokens=512, policy="one_step", cache="fused", streamer=TextStreamer(tok))
    out.sequences          # (B, P + N): the inputs as given (left or right padded), then the new tokens
    out.generated[b]       # row b's new tokens (EOS included when produced)
    out.stats.tpf, out.row_forwards

It takes ``input_ids`` / ``attention_mask`` with left or right padding, the vision inputs, the
usual generation options (``max_new_tokens``, ``eos_token_id``, ``pad_token_id``) and the block
options (``policy``, ``tau``, ``cache``). ``policy="ar"`` decodes one token per forward through
the same block sampler (block size 1 with the shifted head: exactly greedy AR decoding, the
library's AR baseline token for token).

A ``streamer`` follows the transformers protocol: ``put`` first receives the prompt, then each
run of newly final tokens (a whole block at a time, as soon as it is final), and ``end`` is
called last, so ``TextStreamer`` and ``TextIteratorStreamer`` work unchanged (one sequence, as
transformers' own streamers require). ``on_step`` sees every row at every forward, with the
block being decoded and its still-masked positions (:class:`~blockdistill.sampling.observe.StepView`).

Decoding is greedy with ``temperature`` None or 0 (exactly: the same proposal rule as every
sampler). ``temperature`` > 0 samples each proposed token (``top_k``, ``top_p``), through the block
sampler's proposal step (:class:`~blockdistill.sampling.proposal.Sampled`), so every policy and
cache mode samples the same way; the confidence a threshold policy reads is the drawn token's
probability. Randomness: ``generator`` = one ``torch.Generator`` per row (a batch then decodes
exactly what each row decodes alone with its generator), or one shared by the rows; ``seed`` = one
shared generator seeded with it; neither = torch's global generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from blockdistill.models.families import VisionInputs
from blockdistill.sampling.block import CACHE_MODES, block_generate
from blockdistill.sampling.checks import check_ids, check_max_new_tokens, check_vision_inputs
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.sampling.observe import ObservedDenoiser, StepView
from blockdistill.sampling.output import GenerationStats, pad_sequences
from blockdistill.sampling.policies import OneStep, UnmaskPolicy, policy_from_name
from blockdistill.sampling.proposal import GREEDY, Proposal, Sampled

__all__ = ["GenerateOutput", "generate", "right_align"]


@dataclass
class GenerateOutput:
    """What :func:`generate` returns."""

    sequences: Tensor
    """Long ``(B, P + N)``: ``input_ids`` as given, then each row's new tokens, right-padded with the pad id."""
    generated: list[Tensor]
    """Row ``b``'s new tokens, long ``(n_b,)`` (EOS included when produced)."""
    stats: GenerationStats
    """NFE, TPF, tokens/s, lengths of the whole call."""
    row_forwards: list[int]
    """Forwards each row took part in (prefill included): its own NFE, exact in a batch too."""


def right_align(input_ids: Tensor, attention_mask: Tensor | None, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(ids, lens, keep)``: each row's tokens moved to the left, right-padded with ``pad_id``; its length;
    and the bool ``(B, P)`` mask of the kept input positions. Rows must be one contiguous run of 1s."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, P), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        keep = torch.ones_like(input_ids, dtype=torch.bool)
    else:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}")
        keep = attention_mask.bool()
    lens = keep.sum(1)
    first = keep.float().argmax(1)
    run = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] - first[:, None]
    contiguous = (keep == ((run >= 0) & (run < lens[:, None])))
    bad = (~contiguous.all(1)).nonzero()[:, 0].tolist() + (lens == 0).nonzero()[:, 0].tolist()
    if bad:
        raise ValueError(f"attention_mask rows {sorted(set(bad))} are not one non-empty run of 1s (left or right padding)")
    src = (first[:, None] + torch.arange(input_ids.shape[1], device=input_ids.device)).clamp(max=input_ids.shape[1] - 1)
    ids = input_ids.gather(1, src)
    ids = torch.where(torch.arange(input_ids.shape[1], device=ids.device)[None, :] < lens[:, None], ids, pad_id)
    return ids, lens, keep


def _policy(policy: str | UnmaskPolicy | None, tau: float | None) -> tuple[UnmaskPolicy, bool]:
    """The unmasking policy, and whether it is the AR recipe."""
    if policy == "ar":
        return OneStep(), True
    if policy is None or isinstance(policy, str):
        name = policy or "threshold"
        return policy_from_name(name, **({"tau": tau} if tau is not None and name == "threshold" else {})), False
    if tau is not None:
        raise ValueError("tau goes with policy='threshold'; a policy object carries its own parameters")
    return policy, False


def _proposal(temperature: float | None, top_k: int | None, top_p: float | None,
              generator: torch.Generator | Sequence[torch.Generator] | None, seed: int | None, batch: int,
              device: torch.device) -> Proposal:
    """The proposal rule of the sampling options (see the module docstring)."""
    if temperature is None:
        if top_k is not None or top_p not in (None, 1.0):
            raise ValueError("top_k / top_p shape a sampled draw: set temperature > 0 (or 0 for greedy)")
        return GREEDY
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if generator is not None and seed is not None:
        raise ValueError("pass a generator or a seed, not both")
    if not isinstance(generator, (torch.Generator, type(None))):
        generator = list(generator)
        if len(generator) != batch:
            raise ValueError(f"{len(generator)} generators for a batch of {batch}: pass one per row (or one)")
    if temperature == 0:
        return GREEDY  # exactly greedy; top_k / top_p / generator / seed have nothing to shape
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    return Sampled(float(temperature), top_k, top_p, generator)


@torch.no_grad()
def generate(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    pixel_values: Tensor | None = None,
    image_grid_thw: Tensor | None = None,
    mm_token_type_ids: Tensor | None = None,
    max_new_tokens: int = 128,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    policy: str | UnmaskPolicy | None = None,
    tau: float | None = None,
    cache: str = "fused",
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    seed: int | None = None,
    streamer: Any = None,
    on_step: Callable[[StepView], None] | None = None,
    stop_at_eos: bool = True,
) -> GenerateOutput:
    """Decode ``input_ids`` with a :class:`~blockdistill.models.adapter.BlockDiffusionLM`.

    Args:
        model: the block model (its ``spec`` gives block size, mask, EOS and shift).
        input_ids: long ``(B, P)``; attention_mask: ``(B, P)`` 1 on tokens (left or right padding), None: all.
        pixel_values, image_grid_thw, mm_token_type_ids: Qwen2.5-VL vision inputs of the batch's images.
        max_new_tokens: new tokens per row at most.
        eos_token_id: stop id or list of ids (default the model's ``eos_token_ids``); rows stop at any of them.
        pad_token_id: padding of ``sequences`` (default the model's).
        policy: ``"threshold"`` (default, with ``tau``), ``"fixed"``, ``"one_step"``, ``"ar"`` (one token
            per forward on the shifted head, for an AR checkpoint) or an :class:`UnmaskPolicy`.
        cache: one of :data:`~blockdistill.sampling.block.CACHE_MODES`.
        temperature: None or 0: greedy; > 0: sample at that temperature, cut by ``top_k`` / ``top_p``.
        generator: one ``torch.Generator`` per row (batch = rows alone), or one shared; seed: a shared
            generator seeded with it.
        streamer: an object with ``put(tensor)`` and ``end()`` (transformers' streamers); batch size 1.
        on_step: called with a :class:`StepView` per active row at every forward.
        stop_at_eos: False forces ``max_new_tokens`` tokens (benchmarks).
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {tuple(CACHE_MODES)}, got {cache!r}")
    check_max_new_tokens(max_new_tokens)
    check_ids("input_ids", input_ids)
    spec = model.spec
    if eos_token_id is not None:
        spec = spec.with_eos(eos_token_id)
    pad = spec.pad_token_id if pad_token_id is None else int(pad_token_id)
    unmask, ar = _policy(policy, tau)
    proposal = _proposal(temperature, top_k, top_p, generator, seed, input_ids.shape[0], input_ids.device)
    if ar:
        spec = replace(spec, block_size=1, shift=True)
    if streamer is not None and input_ids.shape[0] != 1:
        raise ValueError(f"a streamer takes one sequence (as in transformers); got a batch of {input_ids.shape[0]}")

    ids, lens, keep = right_align(input_ids, attention_mask, spec.pad_token_id)
    check_ids("input_ids", input_ids, keep, model.family.input_embeddings(model.model).num_embeddings)
    vision = None
    if pixel_values is not None or image_grid_thw is not None:
        if pixel_values is None or image_grid_thw is None:
            raise ValueError("pixel_values and image_grid_thw go together")
        mm = None
        if mm_token_type_ids is not None:
            mm, _, _ = right_align(mm_token_type_ids, keep.long(), 0)
        vision = VisionInputs(pixel_values, image_grid_thw, mm)
        if attention_mask is not None and bool(((input_ids == getattr(model.model.config, "image_token_id", -1))
                                                & ~keep).any()):
            raise ValueError("attention_mask cuts through an image: image-pad tokens are masked out")
        check_vision_inputs(model.model.config, ids, lens, vision)

    if streamer is not None:
        streamer.put(input_ids[0][keep[0]][None].cpu())
    on_tokens = None if streamer is None else (lambda row, toks: streamer.put(toks.cpu()))
    den = ObservedDenoiser(HFDenoiser(model), max_new_tokens=max_new_tokens,
                           eos_token_id=spec.eos_token_ids if stop_at_eos else None,
                           on_tokens=on_tokens, on_step=on_step, spec=spec)
    out = block_generate(den, ids, lens, vision, policy=unmask, cache=cache, max_new_tokens=max_new_tokens,
                         stop_at_eos=stop_at_eos, proposal=proposal)
    den.finish(out.sequences)
    if streamer is not None:
        streamer.end()
    seqs = torch.cat([input_ids, pad_sequences(out.sequences, pad).to(input_ids.device)], 1) if out.sequences else input_ids
    return GenerateOutput(seqs, out.sequences, out.stats, list(den.forwards))
