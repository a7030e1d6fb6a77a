"""Losses: the block-diffusion CE and AR CE here; distillation divergences in ``distill``."""

from blockdistill.losses.diffusion import (
           ar_loss,
           diffusion_loss,
           gather_targets,
           response_positions,
           weighted_ce,
)
from blockdistill.losses.distill import (
           dcd_loss,
           eos_cross_entropy,
           forward_kl,
           generalized_jsd,
           reverse_kl,
)

__all__ = ["ar_loss", "diffusion_loss", "gather_targets", "response_positions", "weighted_ce",
           "dcd_loss", "eos_cross_entropy", "forward_kl", "generalized_jsd", "reverse_kl"]
