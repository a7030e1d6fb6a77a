"""blockdistill: turn autoregressive (vision-)language models into one-step block-diffusion
decoders (RAD adaptation, DCD distillation, fused block KV cache)."""

from blockdistill.models.adapter import BlockDiffusionLM, BlockSpec
from blockdistill.models.families import VisionInputs

__version__ = "0.1.0"
__all__ = ["BlockDiffusionLM", "BlockSpec", "VisionInputs", "__version__"]
