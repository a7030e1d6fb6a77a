"""Strings kept as tensor metric states, so torchmetrics can gather them across processes.

torchmetrics only syncs tensors. A metric that needs the whole corpus at ``compute`` time
(CIDEr-D's document frequencies) therefore stores each record as UTF-8 bytes in a uint8
tensor ended by a 0 byte. After a ``dist_reduce_fx="cat"`` sync the records of all
processes arrive as one concatenated tensor, and the 0 bytes still separate them.
"""

from __future__ import annotations

import torch
from torch import Tensor

_END = 0  # UTF-8 never produces a 0 byte except for "\0" itself, which encode() rejects


def encode_record(text: str) -> Tensor:
    """One record as a uint8 tensor of its UTF-8 bytes followed by a 0 byte, shape (bytes+1,)."""
    if "\0" in text:
        raise ValueError(f"record {text[:60]!r} contains a NUL character, which ends records")
    return torch.tensor(list(text.encode("utf-8")) + [_END], dtype=torch.uint8)


def decode_records(state: Tensor | list[Tensor]) -> list[str]:
    """Inverse of :func:`encode_record` for a list of records or their concatenation.

    Accepts any integer or float dtype (byte values 0..255 are exact in every float type),
    in case a synced concatenation was promoted to float.
    """
    if isinstance(state, list):
        if not state:
            return []
        state = torch.cat([s.reshape(-1) for s in state])
    data = bytes(state.reshape(-1).to(device="cpu", dtype=torch.uint8).tolist())
    if data and data[-1] != _END:
        raise ValueError("string state does not end with a record terminator; it is corrupted")
    return [r.decode("utf-8") for r in data.split(b"\0")[:-1]]
