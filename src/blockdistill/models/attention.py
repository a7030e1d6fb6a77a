"""Attention backends: one slot layout, rendered in the form each backend wants.

- ``sdpa``: dense boolean mask (default; the only backend that trains on CPU);
- ``eager``: additive float mask (a boolean 4-D mask is silently misread there);
- ``flex_attention``: a ``BlockMask`` from the layout's ``mask_mod`` (GPU training; inference
  anywhere; its backward raises on CPU, so training there is refused up front);
- ``xformers``: ``memory_efficient_attention`` with an additive bias (optional GPU extra).
"""

from __future__ import annotations

import functools
import inspect

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


Windows = dict[str, "int | None"]
"""HF layer type (``full_attention``, ``sliding_attention``) -> that layer's ``sliding_window``
(None: no window), for the layer types a model has."""


def layer_windows(model: nn.Module) -> Windows:
    """Each layer type of ``model``'s decoder and its window, as HF's own cache and masks read
    them (``config.layer_types``, else ``sliding_window`` on every layer: Mistral, Mixtral,
    StarCoder2, Phi-3, Qwen3-MoE). A layer type without a block rule here (chunked attention) is
    refused, naming the model type and the field."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    cfg = model.config.get_text_config(decoder=True)
    types, kwargs = get_layer_types_and_kwargs(cfg)
    out: Windows = {}
    for t, kw in zip(types, kwargs):
        if t == "full_attention":
            w = None
        elif t == "sliding_attention":
            w = None if kw.get("sliding_window") is None else int(kw["sliding_window"])
        else:
            raise ValueError(f"model_type={cfg.model_type!r}: layer type {t!r} (config.layer_types) has no "
                             "block-attention rule in blockdistill (only full and sliding-window attention)")
        if out.get(t, w) != w:
            raise ValueError(f"model_type={cfg.model_type!r}: {t} layers with different windows ({out[t]}, {w})")
        out[t] = w
    return out


def render_mask(layout: SlotLayout, backend: str, dtype: torch.dtype, num_queries: int | None = None,
                windows: Windows | None = None):
    """The attention mask for ``layout`` in ``backend``'s form (last ``num_queries`` slots query),
    intersected with each layer type's sliding window (:func:`layer_windows`): one mask when every
    layer has the same window, else ``{layer type: mask}``, which the decoders of mixed models
    (Qwen2/3, Gemma-2/3, Qwen2-VL) take in place of one mask and hand each layer its own."""
    distinct = set((windows or {None: None}).values())
    if len(distinct) == 1:
        return _render(layout, backend, dtype, num_queries, distinct.pop())
    rendered = {w: _render(layout, backend, dtype, num_queries, w) for w in distinct}
    return {t: rendered[w] for t, w in windows.items()}


def _render(layout: SlotLayout, backend: str, dtype: torch.dtype, num_queries: int | None, window: int | None):
    if backend == "sdpa":
        return dense_mask(layout, num_queries, window)
    if backend in ("eager", "xformers"):
        return additive_mask(dense_mask(layout, num_queries, window), dtype)
    if backend == "flex_attention":
        return flex_block_mask(layout, num_queries, window=window)
    raise ValueError(f"attn_backend must be one of {ATTN_BACKENDS}, got {backend!r}")


@functools.cache
def takes_mask_mapping(decoder_type: type) -> bool:
    """The decoder's forward accepts ``{layer type: mask}`` (HF 5.x's ``causal_mask_mapping``
    idiom: ``if not isinstance(causal_mask_mapping := attention_mask, dict)``)."""
    try:
        src = inspect.getsource(decoder_type.forward)
    except (OSError, TypeError):
        return False
    return "isinstance(causal_mask_mapping := attention_mask, dict)" in src


def check_windows(model: nn.Module, decoder: nn.Module) -> Windows:
    """:func:`layer_windows`, refused where layers differ but the decoder takes one mask for all
    (the window would be dropped or forced on every layer)."""
    windows = layer_windows(model)
    if len(set(windows.values())) > 1 and not takes_mask_mapping(type(decoder)):
        cfg = model.config.get_text_config(decoder=True)
        raise ValueError(f"model_type={cfg.model_type!r}: its layers differ in sliding window "
                         f"(config.layer_types / sliding_window: {windows}) but {type(decoder).__name__} takes one "
                         "attention mask for every layer; blockdistill cannot intersect each layer's window with the "
                         "block mask there. Set config.sliding_window to None (or a window longer than any "
                         "sequence) to run without windows.")
    return windows


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
