"""Backbone-family hooks: the only place that knows how a model family embeds tokens,
computes position ids and exposes its decoder and LM head.

Adding a family means adding one file with a :class:`BackboneFamily` subclass and calling
:func:`register_family`; samplers, losses and training code never change.
"""

from blockdistill.models.families.base import (
    REFUSED,
    BackboneFamily,
    VisionInputs,
    family_for,
    pop_router_aux,
    register_family,
    registered_families,
)
from blockdistill.models.families.gemma import GemmaSoftcapFamily
from blockdistill.models.families.moe import MoEFamily
from blockdistill.models.families.qwen2_5_vl import Qwen25VLFamily
from blockdistill.models.families.scaled import CohereFamily, GraniteFamily
from blockdistill.models.families.text import TextFamily

__all__ = [
    "REFUSED",
    "BackboneFamily",
    "CohereFamily",
    "GemmaSoftcapFamily",
    "GraniteFamily",
    "MoEFamily",
    "Qwen25VLFamily",
    "TextFamily",
    "VisionInputs",
    "pop_router_aux",
    "family_for",
    "register_family",
    "registered_families",
]
