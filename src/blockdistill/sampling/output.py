"""What every sampler returns: the generated ids per sequence and decoding statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from blockdistill.sampling.trace import BlockTrace

__all__ = ["GenerationOutput", "GenerationStats", "Throughput", "pad_sequences"]


class Throughput:
    """Rates derived from ``generated_tokens``, ``row_forwards``, ``wall_s`` and ``prefill_s``
    (shared by one call's statistics and their sums over a run)."""

    generated_tokens: int
    row_forwards: int
    wall_s: float
    prefill_s: float

    @property
    def decode_s(self) -> float:
        return self.wall_s - self.prefill_s

    @property
    def tpf(self) -> float:
        """Tokens per forward, per sequence: generated tokens / row-forwards."""
        return self.generated_tokens / max(self.row_forwards, 1)

    @property
    def tokens_per_s(self) -> float:
        """Throughput including prefill."""
        return self.generated_tokens / max(self.wall_s, 1e-12)

    @property
    def tokens_per_s_decode(self) -> float:
        """Throughput of the decode phase only."""
        return self.generated_tokens / max(self.decode_s, 1e-12)


@dataclass
class GenerationStats(Throughput):
    """Costs of one sampler call (all rows together)."""

    nfe: int
    """Backbone forwards, prefill included."""
    nfe_decode: int
    """Backbone forwards after prefill."""
    row_forwards: int
    """Sum over decode forwards of the rows they carried (finished rows are dropped)."""
    generated_tokens: int
    """Tokens returned, all rows (after truncation at EOS / ``max_new_tokens``)."""
    lengths: list[int]
    """Generated length of each row (EOS included when it was produced)."""
    wall_s: float
    """Wall time of the whole call."""
    prefill_s: float
    """Wall time of prefill (prompt encoding, vision included)."""


    def as_dict(self) -> dict:
        return {"nfe": self.nfe, "nfe_decode": self.nfe_decode, "row_forwards": self.row_forwards,
                "generated_tokens": self.generated_tokens, "lengths": list(self.lengths),
                "wall_s": self.wall_s, "prefill_s": self.prefill_s, "decode_s": self.decode_s,
                "tpf": self.tpf, "tokens_per_s": self.tokens_per_s,
                "tokens_per_s_decode": self.tokens_per_s_decode}


@dataclass
class GenerationOutput:
    """Generated ids of a batch, in input row order.

    ``sequences[b]`` is long ``(n_b,)``: the generated tokens of row ``b`` (prompt excluded),
    ending with EOS when the row stopped there.
    """

    sequences: list[Tensor]
    stats: GenerationStats
    traces: list[BlockTrace] | None = field(default=None)
    """Per-row trajectories when recording was asked for."""

    def padded(self, pad_id: int) -> Tensor:
        """Long ``(B, max n_b)``, right-padded with ``pad_id``."""
        return pad_sequences(self.sequences, pad_id)


def pad_sequences(seqs: list[Tensor], pad_id: int) -> Tensor:
    """Right-pad 1-D long tensors into ``(B, max len)``."""
    width = max((int(s.shape[0]) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long,
                     device=seqs[0].device if seqs else None)
    for b, s in enumerate(seqs):
        out[b, : s.shape[0]] = s
    return out
