"""Families whose forward scales the LM head's output: Granite (``/ logits_scaling``) and
Cohere (``* logit_scale``). Granite's embedding, residual and attention multipliers live inside
its decoder, so they apply unchanged."""

from torch import Tensor, nn

from blockdistill.models.families.base import BackboneFamily, register_family


class GraniteFamily(BackboneFamily):
    name = "granite"
    model_types = ("granite",)

    def transform_logits(self, model: nn.Module, logits: Tensor) -> Tensor:
        return logits / self.text_config(model).logits_scaling


class CohereFamily(BackboneFamily):
    name = "cohere"
    model_types = ("cohere",)

    def transform_logits(self, model: nn.Module, logits: Tensor) -> Tensor:
        return logits * self.text_config(model).logit_scale


register_family(GraniteFamily())
register_family(CohereFamily())
