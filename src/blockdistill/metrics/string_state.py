"""Strings kept as tensor metric states, so torchmetrics can gather them across processes.

torchmetrics only syncs tensors. A metric that needs the whole corpus at ``compute`` time
(CIDEr-D's document frequencies) therefore stores each record as UTF-8 bytes in a uint8
tensor ended by a 0 byte. After a ``dist_reduce_fx="cat"`` sync the records of all
processes arrive as one concatenated tensor, and the 0 bytes still separate them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from blockdistill.metrics.text import as_reference_lists, tokenize

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


class TokenizedPairs(Metric):
    """Base of the corpus metrics that score at ``compute`` from every (prediction, references)
    pair: CIDEr-D (document frequencies) and METEOR (the jar).

    Each ``update`` tokenizes with :func:`blockdistill.metrics.text.tokenize` in ``self.lang`` and
    keeps one record per sample, ``"hyp tokens\tref1 tokens\nref2 tokens"`` (tokens hold no
    whitespace, so tab and newline are safe separators), synced across processes by concatenation.
    """

    records: list[Tensor]
    lang: str = "en"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("records", [], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Add N predictions, each with one reference (str) or several (list of str)."""
        for pred, refs in zip(preds, as_reference_lists(preds, target)):
            hyp = " ".join(tokenize(pred, self.lang))
            ref = "\n".join(" ".join(tokenize(r, self.lang)) for r in refs)
            self.records.append(encode_record(f"{hyp}\t{ref}").to(self.device))

    def pairs(self) -> list[tuple[str, list[str]]]:
        """The accumulated (tokenized hypothesis, tokenized references) of every sample."""
        out = []
        for record in decode_records(self.records):
            hyp, refs = record.split("\t")
            out.append((hyp, refs.split("\n")))
        return out

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        # torchmetrics stands in an empty *float* tensor for the list state of a process that
        # saw no data; gathering it against uint8 bytes from the other processes breaks the
        # collective (gloo aborts on the size mismatch). An empty uint8 tensor keeps dtypes
        # equal. sync() has already cached the real state and restores it afterwards.
        if isinstance(self.records, list) and not self.records:
            self.records = [torch.zeros(0, dtype=torch.uint8, device=self.device)]
        super()._sync_dist(*args, **kwargs)
