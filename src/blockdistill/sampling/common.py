"""What every sampler shares: prompt checks, the end of a row's output, clocks.

The block samplers (:mod:`blockdistill.sampling.block`) and the AR baseline
(:mod:`blockdistill.sampling.ar`) finish rows by the same rule (:func:`finish_sequence`: cut at
``max_new_tokens`` and after the first end-of-sequence token) and time themselves the same way
(:func:`device_sync` before reading a clock), so their outputs and timings compare directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from blockdistill.layout import decode_end

__all__ = ["check_prompts", "device_sync", "finish_sequence"]


def check_prompts(prompt_ids: Tensor, prompt_lens: Tensor, max_new_tokens: int, block_size: int,
                  max_context: int | None) -> None:
    """Raise ``ValueError`` on inputs no sampler can decode, naming the bad value."""
    from blockdistill.sampling.checks import check_ids, check_max_new_tokens

    check_max_new_tokens(max_new_tokens)
    check_ids("prompt_ids", prompt_ids)
    if prompt_ids.dim() != 2 or prompt_lens.shape != (prompt_ids.shape[0],):
        raise ValueError(f"prompt_ids must be (B, P) and prompt_lens (B,); got {tuple(prompt_ids.shape)} "
                         f"and {tuple(prompt_lens.shape)}")
    if prompt_ids.shape[0] == 0:
        raise ValueError("empty batch: prompt_ids has no rows")
    lo, hi = int(prompt_lens.min()), int(prompt_lens.max())
    if lo < 1 or hi > prompt_ids.shape[1]:
        raise ValueError(f"prompt_lens must be in [1, {prompt_ids.shape[1]}] (prompt_ids width), got {lo}..{hi}")
    if max_context is not None:
        if hi > max_context:
            raise ValueError(f"prompt has {hi} tokens but the backbone's context is {max_context}")
        end = int(decode_end(prompt_lens, max_new_tokens, block_size).max())
        if end > max_context:
            raise ValueError(
                f"prompt of {hi} tokens plus max_new_tokens={max_new_tokens} needs {end} positions "
                f"(whole blocks of {block_size}) but the backbone's context is {max_context}")


def finish_sequence(generated: Tensor, max_new_tokens: int, is_eos: Callable[[Tensor], Tensor] | None) -> Tensor:
    """A row's output from its generated tokens (long ``(n,)``, prompt excluded): the first
    ``max_new_tokens`` of them, cut after the first token where ``is_eos`` is true (kept);
    ``is_eos=None`` does not stop at EOS. Returns a new tensor."""
    out = generated[:max_new_tokens]
    if is_eos is not None:
        hit = is_eos(out).nonzero()
        if hit.numel():
            out = out[: int(hit[0, 0]) + 1]
    return out.clone()


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work, to call before reading a clock
    (a no-op on CPU)."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None
