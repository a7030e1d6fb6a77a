"""Entry checks of the decoding API: bad arguments fail at once with the value named.

Called by :func:`~blockdistill.sampling.generate.generate` and the samplers' entry
(:func:`~blockdistill.sampling.common.check_prompts`, :func:`~blockdistill.sampling.block.block_generate`),
so that an integer given as a float, ``int32`` ids, vision inputs that do not fit the prompt, or
NaN pixels are refused instead of failing deep inside a forward (or, for NaN pixels, decoding
silently to a constant). Validation only: nothing here changes a valid input.

    check_max_new_tokens(8.0)   # ValueError: max_new_tokens must be an int, got float 8.0
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_ids", "check_max_new_tokens", "check_vision_inputs"]


def check_max_new_tokens(max_new_tokens: Any) -> None:
    """An ``int`` >= 1 (a bool, float or tensor is refused)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral):
        raise ValueError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__} {max_new_tokens!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def check_ids(name: str, ids: Any, keep: Tensor | None = None, vocab_size: int | None = None) -> None:
    """``ids`` a ``torch.long`` tensor whose kept entries lie in ``[0, vocab_size)``."""
    if not isinstance(ids, Tensor):
        raise ValueError(f"{name} must be a torch.long tensor, got {type(ids).__name__}")
    if ids.dtype != torch.long:
        raise ValueError(f"{name} must be torch.long (int64) token ids, got {ids.dtype}: convert with .long()")
    if vocab_size is None or ids.numel() == 0:
        return
    values = ids if keep is None else ids[keep.bool()]
    bad = (values < 0) | (values >= vocab_size)
    if bool(bad.any()):
        raise ValueError(f"{name} holds token id {int(values[bad][0])} outside the model's vocabulary "
                         f"[0, {vocab_size})")


def _hf_config(denoiser: Any) -> Any:
    """The HF config behind a denoiser (``ObservedDenoiser`` -> ``HFDenoiser`` -> model), or None."""
    seen = 0
    while denoiser is not None and seen < 4:
        model = getattr(denoiser, "model", None)
        if model is not None and hasattr(getattr(model, "model", None), "config"):
            return model.model.config
        denoiser, seen = getattr(denoiser, "inner", None), seen + 1
    return None


def check_vision_inputs(config: Any, prompt_ids: Tensor, prompt_lens: Tensor, vision: Any) -> None:
    """Qwen2.5-VL vision inputs that fit ``config`` and each row's prompt, with finite pixels.

    ``config`` is the HF config (or a denoiser, whose model's config is used; None: only the
    model-independent checks). Every image's pad tokens must lie inside its row's prompt
    (``prompt_lens`` may not cut through one) and the rows must hold whole images, in order.
    """
    if vision is None:
        return
    if not hasattr(config, "vision_config"):
        config = _hf_config(config)
    pv, thw = vision.pixel_values, vision.image_grid_thw
    if not isinstance(pv, Tensor) or not pv.is_floating_point() or pv.dim() != 2:
        raise ValueError(f"pixel_values must be a float (num_patches, dim) tensor, got "
                         f"{getattr(pv, 'dtype', type(pv).__name__)} of shape {tuple(getattr(pv, 'shape', ()))}")
    if not isinstance(thw, Tensor) or thw.is_floating_point() or thw.dim() != 2 or thw.shape[1] != 3:
        raise ValueError(f"image_grid_thw must be an integer (num_images, 3) tensor, got shape "
                         f"{tuple(getattr(thw, 'shape', ()))}")
    if bool((thw < 1).any()):
        raise ValueError(f"image_grid_thw holds a non-positive size: {thw.tolist()}")
    patches = thw.prod(-1)
    if pv.shape[0] != int(patches.sum()):
        raise ValueError(f"pixel_values has {pv.shape[0]} patch rows but image_grid_thw {thw.tolist()} "
                         f"gives {int(patches.sum())}")
    finite = torch.isfinite(pv).all(-1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0, 0])
        image = int((torch.cumsum(patches, 0) <= row).sum())
        raise ValueError(f"pixel_values holds {int((~torch.isfinite(pv)).sum())} non-finite values "
                         f"(NaN or inf), the first in image {image} (patch row {row})")
    if config is None or getattr(config, "vision_config", None) is None:
        return
    vc = config.vision_config
    dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
    if pv.shape[1] != dim:
        raise ValueError(f"pixel_values rows have {pv.shape[1]} values but this model's patches have {dim} "
                         f"(in_channels {vc.in_channels} x temporal_patch_size {vc.temporal_patch_size} x "
                         f"patch_size {vc.patch_size}^2)")
    merge = vc.spatial_merge_size
    if bool((thw[:, 1:] % merge).any()):
        raise ValueError(f"image_grid_thw {thw.tolist()}: height and width must be multiples of "
                         f"spatial_merge_size={merge}")
    image_pad = prompt_ids == int(config.image_token_id)
    inside = torch.arange(prompt_ids.shape[1], device=prompt_ids.device)[None] < prompt_lens.to(prompt_ids.device)[:, None]
    cut = (image_pad & ~inside).any(1)
    if bool(cut.any()):
        b = int(cut.nonzero()[0, 0])
        first = int((image_pad[b] & ~inside[b]).nonzero()[0, 0])
        raise ValueError(f"prompt_lens[{b}]={int(prompt_lens[b])} cuts through an image: row {b} has image-pad "
                         f"tokens from position {first} on, past its prompt")
    ends = {0, *torch.cumsum(patches // merge ** 2, 0).tolist()}
    total = 0
    for b, count in enumerate(image_pad.sum(1).tolist()):
        total += count
        if total not in ends:
            raise ValueError(f"row {b} holds {count} image-pad tokens, which do not make whole images in order "
                             f"(images of {(patches // merge ** 2).tolist()} tokens)")
    if total != max(ends):
        raise ValueError(f"vision inputs do not match the prompt: image_grid_thw gives {max(ends)} image tokens "
                         f"but the input ids hold {total} image-pad tokens")
