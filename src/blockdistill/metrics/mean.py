"""The base of the metrics that average one score per sample (ROUGE-L, SemScore, RaTEScore)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class SampleMean(Metric):
    """A mean of per-sample scores kept as a float64 sum and a count.

    Subclasses score a batch in ``update`` and call :meth:`add_scores`; the states merge across
    batches and processes exactly (up to summation order), and ``compute`` is the mean, 0 when no
    sample was seen. Name the score's range in the subclass docstring.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    score_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs) -> None:
        """``kwargs`` go to :class:`torchmetrics.Metric`."""
        super().__init__(**kwargs)
        self.add_state("score_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def add_scores(self, total: float | Tensor, n: int) -> None:
        """Add ``n`` samples whose scores sum to ``total``."""
        self.score_sum += total
        self.count += n

    def compute(self) -> Tensor:
        """The mean score over every sample seen, a float64 scalar; 0 for no samples."""
        if int(self.count) == 0:
            return torch.tensor(0.0, dtype=torch.float64)
        return self.score_sum / self.count
