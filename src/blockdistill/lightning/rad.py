"""Stage 2: RAD adaptation: masked block-diffusion loss on the response-asymmetric layout."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor

from blockdistill.config import LoraConfig, NoiseConfig, OptimConfig
from blockdistill.data import Batch
from blockdistill.layout import TRAINING_LAYOUTS
from blockdistill.lightning.common import StageSystem, with_router_aux
from blockdistill.losses import diffusion_loss
from blockdistill.losses.noise import complement, sample_noise
from blockdistill.models.adapter import BlockDiffusionLM


class RADSystem(StageSystem):
    """Receives a :class:`BlockDiffusionLM`; ``layout="full_dup"`` trains the duplication baseline;
    ``lora`` trains LoRA adapters (put on ``model`` in place) instead of every weight."""

    def __init__(self, model: BlockDiffusionLM, optim: OptimConfig, noise: NoiseConfig, layout: str = "rad",
                 seed: int = 0, lora: LoraConfig | None = None) -> None:
        super().__init__(model, optim)
        self.use_lora(lora)
        self.seed = seed
        if layout not in TRAINING_LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(TRAINING_LAYOUTS)}, got {layout!r}")
        self.noise = noise
        self.layout = layout
        self.save_hyperparameters({"noise": asdict(noise), "layout": layout, "block": asdict(model.spec)})

    def noise_generator(self) -> torch.Generator:
        """Noise is a function of (seed, rank, step): a resumed run draws exactly what it would have."""
        g = torch.Generator(device=self.device)
        g.manual_seed(hash((self.seed, self.global_rank, self.global_step, self.training)) % (2**63))
        return g

    def compute_loss(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        maskable = batch.maskable()
        generator = generator if generator is not None else self.noise_generator()
        z = sample_noise(maskable, self.net.block_size, self.noise.eps, self.noise.per_block, generator)
        noises = [z, complement(z, maskable, self.noise.eps)] if self.noise.complementary else [z]
        loss, stats = diffusion_loss(self.net, batch.input_ids, batch.prompt_lens, batch.seq_lens, maskable, noises,
                                     vision=batch.vision, layout=self.layout)
        return with_router_aux(self.net, loss, stats)
