"""Mixture-of-experts text LMs (Qwen3-MoE, Mixtral): the dense defaults drive them; the router
only picks experts per token, so the block masks apply unchanged."""

from blockdistill.models.families.base import BackboneFamily, register_family


class MoEFamily(BackboneFamily):
    name = "moe"
    model_types = ("qwen3_moe", "mixtral")


register_family(MoEFamily())
