"""Mixture-of-experts text LMs (Qwen3-MoE, Mixtral): the dense defaults drive them (the router
only picks experts per token, so the block masks apply unchanged), plus the router's
load-balancing loss, added in training the way HF's ``*ForCausalLM.forward`` adds it: only when
``config.output_router_logits`` is set (HF's default: off), weighted by
``config.router_aux_loss_coef``, with HF's own ``load_balancing_loss_func`` over the real tokens
(every valid slot the decoder ran: RAD's noisy copy routes through the experts too)."""

import sys

from torch import Tensor, nn

from blockdistill.models.families.base import BackboneFamily, register_family


class MoEFamily(BackboneFamily):
    name = "moe"
    model_types = ("qwen3_moe", "mixtral")

    def router_aux_weight(self, model: nn.Module) -> float:
        cfg = self.text_config(model)
        return float(cfg.router_aux_loss_coef) if getattr(cfg, "output_router_logits", False) else 0.0

    def router_aux_loss(self, model: nn.Module, router_logits: tuple[Tensor, ...], valid: Tensor) -> Tensor:
        cfg = self.text_config(model)
        hf = sys.modules[type(self.decoder(model)).__module__].load_balancing_loss_func
        experts = cfg.num_experts if cfg.model_type == "qwen3_moe" else cfg.num_local_experts
        return hf(tuple(router_logits), experts, cfg.num_experts_per_tok, valid)


register_family(MoEFamily())
