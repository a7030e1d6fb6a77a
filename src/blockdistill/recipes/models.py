"""Wrapping a loaded backbone with the block rules a stage needs, from explicit arguments.

A model saved by :meth:`~blockdistill.models.adapter.BlockDiffusionLM.save_pretrained` carries
its rules (block size, shift, mask, EOS and pad ids). Every stage reads them from the model;
an argument left ``None`` means "the model's", and an explicit value that contradicts them is
a :class:`~blockdistill.config.ConfigError` naming the ``block.*`` field to fix. A plain AR
model gets its mask token here and the rules given.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from blockdistill.config import ConfigError
from blockdistill.models.adapter import CONFIG_KEY, BlockDiffusionLM, BlockSpec

__all__ = ["AR_CONVERSION_SHIFT", "wrap_for_stage"]

AR_CONVERSION_SHIFT = True
"""The head alignment given to an AR model converted with ``shift=None``: shifted (logits at
i-1 predict token i), the alignment its LM head was trained with. AR-converted models adapt far
faster with it: on the tiny ECHO run, 150 RAD steps from ECHO_AR gave multi-step macro-F1 0.83
with shift and 0.19 without (``examples/echo_cxr/configs/tiny/rad.yaml``)."""


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _stored_spec(model: nn.Module) -> BlockSpec | None:
    stored = getattr(model.config, CONFIG_KEY, None)
    return BlockSpec(**stored) if stored else None


def wrap_for_stage(model: nn.Module, tokenizer: Any, *, block_size: int | None = None,
                   shift: bool | None = None, mask_token: str = "[MASK]", mask_token_id: int | None = None,
                   eos_token_id: int | None = None, pad_token_id: int | None = None,
                   attn_backend: str = "sdpa", allow_block_size_change: bool = False) -> BlockDiffusionLM:
    """Wrap ``model`` (a loaded HF backbone) as a :class:`BlockDiffusionLM` for a stage.

    A model that already carries block rules keeps them: ``None`` arguments take the saved
    values; ``shift``, ``mask_token_id``, ``eos_token_id`` and ``pad_token_id`` must match them
    when given (the model was trained with them); ``block_size`` may differ only where the stage
    retrains the model (``allow_block_size_change``, e.g. RAD at another block size). A
    mismatch is a :class:`ConfigError` naming the ``block.*`` field.

    An AR model needs ``block_size``; ``shift=None`` becomes :data:`AR_CONVERSION_SHIFT`. It gets
    ``mask_token`` (added to ``tokenizer`` unless ``mask_token_id`` names a token already there),
    and EOS / pad ids from the arguments or the tokenizer.
    """
    spec = _stored_spec(model)
    if spec is not None:
        given = {"shift": shift, "mask_token_id": mask_token_id, "eos_token_id": eos_token_id,
                 "pad_token_id": pad_token_id}
        for name, value in given.items():
            saved = getattr(spec, name)
            if value is not None and value != saved:
                raise ConfigError(f"block.{name}: the model was trained with {name}={_yaml(saved)} but "
                                  f"{_yaml(value)} is configured; leave block.{name} unset (null) or set it to "
                                  f"{_yaml(saved)}")
        if block_size is not None and block_size != spec.block_size:
            if not allow_block_size_change:
                raise ConfigError(f"block.block_size: the model was trained with block_size={spec.block_size} but "
                                  f"{block_size} is configured; leave block.block_size unset (null) or set it to "
                                  f"{spec.block_size}")
            print(f"note: retraining a block_size={spec.block_size} model at block_size={block_size}")
            spec = replace(spec, block_size=block_size)
        return BlockDiffusionLM(model, spec, attn_backend=attn_backend)
    if block_size is None:
        raise ConfigError("block.block_size: is required to convert an AR model (it carries no block rules)")
    shift = AR_CONVERSION_SHIFT if shift is None else shift
    if mask_token_id is not None:
        eos = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
        pad = pad_token_id if pad_token_id is not None else (tokenizer.pad_token_id or eos)
        spec = BlockSpec(block_size, mask_token_id, eos, pad, shift)
        return BlockDiffusionLM(model, spec, attn_backend=attn_backend, real_vocab_size=len(tokenizer))
    return BlockDiffusionLM.from_causal_lm(model, tokenizer, block_size=block_size, shift=shift,
                                           mask_token=mask_token, eos_token_id=eos_token_id,
                                           pad_token_id=pad_token_id, attn_backend=attn_backend)
