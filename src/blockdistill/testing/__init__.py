"""Test utilities shipped with the library: tiny backbones, toy joint distributions and
Hypothesis strategies, so users can check their own parts the way our tests do."""

from blockdistill.testing.models import (
    tiny_image_inputs,
    tiny_qwen2,
    tiny_qwen2_5_vl,
    tiny_tokenizer,
)
from blockdistill.testing.toy import ToyJoint, ToyVocab

__all__ = ["ToyJoint", "ToyVocab", "tiny_image_inputs", "tiny_qwen2", "tiny_qwen2_5_vl", "tiny_tokenizer"]
# Hypothesis strategies (need the dev extra): ``from blockdistill.testing.strategies import toy_joints``.
