"""Gemma-2 and Gemma-3 (text): final logit soft-capping, and Gemma-2's eager-only attention."""

import torch
from torch import Tensor, nn

from blockdistill.models.families.base import BackboneFamily, register_family


class GemmaSoftcapFamily(BackboneFamily):
    """``logits = cap * tanh(logits / cap)`` with ``config.final_logit_softcapping`` (Gemma-2: 30;
    Gemma-3: unset by default), as their ``*ForCausalLM.forward`` does. Gemma-2's attention
    soft-capping lives inside HF's eager attention, which HF picks for it (it refuses SDPA):
    :meth:`BackboneFamily.attn_implementation` then renders additive float masks."""

    name = "gemma_softcap"
    model_types = ("gemma2", "gemma3_text")

    def transform_logits(self, model: nn.Module, logits: Tensor) -> Tensor:
        cap = getattr(self.text_config(model), "final_logit_softcapping", None)
        if cap is None:
            return logits
        return torch.tanh(logits / cap) * cap


register_family(GemmaSoftcapFamily())
