"""Attention backends: one slot layout, rendered in the form each backend wants.

- ``sdpa``: dense boolean mask (default; the only backend that trains on CPU);
- ``eager``: additive float mask (a boolean 4-D mask is silently misread there);
- ``flex_attention``: a ``BlockMask`` from the layout's ``mask_mod`` (GPU training; inference
  anywhere; its backward raises on CPU, so training there is refused up front);
- ``xformers``: ``memory_efficient_attention`` with an additive bias (optional GPU extra).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from blockdistill.config import ATTN_BACKENDS
from blockdistill.layout import SlotLayout, additive_mask, dense_mask, flex_block_mask

XFORMERS_IMPL = "blockdistill_xformers"


def hf_attn_implementation(backend: str) -> str:
    """The ``attn_implementation`` name to set on the HF model for ``backend``."""
    if backend not in ATTN_BACKENDS:
        raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")
    if backend == "xformers":
        _register_xformers()
        return XFORMERS_IMPL
    return backend


def check_backend(backend: str, device: torch.device, training: bool) -> None:
    """Raise a clear error where ``backend`` cannot run."""
    if backend == "flex_attention" and training and device.type == "cpu":
        raise RuntimeError(
            "attn_backend='flex_attention' has no backward pass on CPU (torch raises NotImplementedError); "
            "train with attn_backend='sdpa' on CPU and use flex_attention for inference or on GPU"
        )
    if backend == "xformers":
        if device.type != "cuda":
            raise RuntimeError("attn_backend='xformers' needs a CUDA device: xformers has no CPU kernels")
        try:
            import xformers.ops  # noqa: F401
        except ImportError as e:
            raise RuntimeError("attn_backend='xformers' needs the xformers extra: pip install 'blockdistill[xformers]'") from e


def render_mask(layout: SlotLayout, backend: str, dtype: torch.dtype, num_queries: int | None = None):
    """The attention mask for ``layout`` in ``backend``'s form (last ``num_queries`` slots query)."""
    if backend == "sdpa":
        return dense_mask(layout, num_queries)
    if backend in ("eager", "xformers"):
        return additive_mask(dense_mask(layout, num_queries), dtype)
    if backend == "flex_attention":
        return flex_block_mask(layout, num_queries)
    raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")


def _xformers_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                        attention_mask: Tensor | None, scaling: float | None = None,
                        dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    import xformers.ops as xops

    # HF passes (B, H, S, D); xformers wants (B, S, H, D) and repeats no KV heads itself.
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
    bias = None
    if attention_mask is not None:
        bias = attention_mask.to(query.dtype).expand(query.shape[0], query.shape[1], -1, -1)
        # xformers wants the bias' last dim aligned to 8; pad and slice.
        pad = (-bias.shape[-1]) % 8
        if pad:
            bias = torch.nn.functional.pad(bias, (0, pad))[..., : key.shape[2]]
    out = xops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
        attn_bias=bias, p=dropout if module.training else 0.0, scale=scaling,
    )
    return out, None


def _register_xformers() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(XFORMERS_IMPL, _xformers_attention)
    try:
        from transformers.masking_utils import eager_mask

        AttentionMaskInterface.register(XFORMERS_IMPL, eager_mask)
    except ImportError:  # older transformers: 4-D masks pass through untouched anyway
        pass
