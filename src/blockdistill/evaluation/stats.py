"""Decoding statistics aggregated over many sampler calls.

Throughputs are ratios of sums (total tokens / total time), not means of per-batch ratios, and
tokens per forward is total tokens / total row-forwards, i.e. the per-call TPF averaged with
weights equal to each call's row-forwards. Every field is a plain sum, so merging two
aggregates is adding them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from blockdistill.sampling import GenerationStats
from blockdistill.sampling.output import Throughput

__all__ = ["RunStats"]


@dataclass
class RunStats(Throughput):
    """Sums of :class:`~blockdistill.sampling.GenerationStats` over sampler calls."""

    calls: int = 0
    """Sampler calls (batches) summed."""
    nfe: int = 0
    """Backbone forwards, prefill included (a batched forward counts once)."""
    nfe_decode: int = 0
    """Backbone forwards after prefill."""
    row_forwards: int = 0
    """Sum over decode forwards of the rows they carried."""
    generated_tokens: int = 0
    """Tokens generated, all rows (EOS included when produced)."""
    wall_s: float = 0.0
    """Wall time of the calls, prefill included."""
    prefill_s: float = 0.0
    """Wall time of prefill."""
    lengths: list[int] = field(default_factory=list)
    """Generated length of every row."""

    def add(self, stats: GenerationStats) -> None:
        """Add one sampler call's statistics."""
        self.calls += 1
        self.nfe += stats.nfe
        self.nfe_decode += stats.nfe_decode
        self.row_forwards += stats.row_forwards
        self.generated_tokens += stats.generated_tokens
        self.wall_s += stats.wall_s
        self.prefill_s += stats.prefill_s
        self.lengths += list(stats.lengths)

    def merge(self, other: RunStats) -> RunStats:
        """A new aggregate holding both."""
        return RunStats(self.calls + other.calls, self.nfe + other.nfe, self.nfe_decode + other.nfe_decode,
                        self.row_forwards + other.row_forwards, self.generated_tokens + other.generated_tokens,
                        self.wall_s + other.wall_s, self.prefill_s + other.prefill_s, self.lengths + other.lengths)

    @property
    def n(self) -> int:
        """Rows generated."""
        return len(self.lengths)

    @property
    def forwards_per_sample(self) -> float:
        """Decode forwards each sequence went through, on average (prefill excluded)."""
        return self.row_forwards / max(self.n, 1)

    @property
    def mean_length(self) -> float:
        return sum(self.lengths) / max(self.n, 1)

    def summary(self) -> dict[str, Any]:
        """Flat dict for tables and JSON (``lengths`` summarised by its mean, min and max)."""
        return {
            "nfe": self.nfe, "nfe_decode": self.nfe_decode, "row_forwards": self.row_forwards,
            "forwards_per_sample": self.forwards_per_sample, "tpf": self.tpf,
            "tokens_per_s": self.tokens_per_s, "tokens_per_s_decode": self.tokens_per_s_decode,
            "generated_tokens": self.generated_tokens, "mean_length": self.mean_length,
            "min_length": min(self.lengths, default=0), "max_length": max(self.lengths, default=0),
            "wall_s": self.wall_s, "prefill_s": self.prefill_s, "calls": self.calls,
        }
