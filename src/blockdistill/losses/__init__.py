"""Losses: the block-diffusion CE and AR CE (``diffusion``), distillation divergences (``distill``)
and the teacher-row type they compare against (``rows.TokenDists``)."""

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
from blockdistill.losses.rows import TokenDists, top_k_rows

__all__ = ["ar_loss", "diffusion_loss", "gather_targets", "response_positions", "weighted_ce",
           "dcd_loss", "eos_cross_entropy", "forward_kl", "generalized_jsd", "reverse_kl", "TokenDists", "top_k_rows"]
