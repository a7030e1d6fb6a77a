"""Generated ids to text (the samplers never see a tokenizer; the evaluation does)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["decode_ids"]


def decode_ids(ids: Tensor | Iterable[int], tokenizer: Any, *, eos_id: int, drop_ids: Iterable[int] = (),
               skip_special_tokens: bool = True) -> str:
    """Text of one generated row.

    The row is cut at its first ``eos_id`` (EOS excluded), ids in ``drop_ids`` (pad, the mask
    token) are removed, and the rest is decoded and stripped of surrounding whitespace.

    Args:
        ids: long ``(n,)`` generated ids (prompt excluded), as a sampler returns them.
        tokenizer: anything with ``decode(list[int], skip_special_tokens=...)``.
        eos_id: end-of-sequence id; nothing after it is text.
        drop_ids: ids removed before decoding.
        skip_special_tokens: passed to ``tokenizer.decode``.
    """
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    drop = set(drop_ids)
    ids = [i for i in ids if i not in drop]
    return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens).strip()
