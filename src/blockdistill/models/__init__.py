"""Backbone wrappers: :class:`BlockDiffusionLM` around any registered Hugging Face causal LM or
Qwen2.5-VL-style VLM, the attention backends, backbone loading and the per-family modules."""

from blockdistill.models.adapter import BlockDiffusionLM, BlockSpec
from blockdistill.models.families import VisionInputs

__all__ = ["BlockDiffusionLM", "BlockSpec", "VisionInputs"]
