"""Losses: the block-diffusion CE and AR CE here; distillation divergences in ``distill``."""

from blockdistill.losses.diffusion import ar_loss, diffusion_loss, gather_targets, response_positions, weighted_ce

__all__ = ["ar_loss", "diffusion_loss", "gather_targets", "response_positions", "weighted_ce"]
