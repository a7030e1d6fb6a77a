"""The backbone-family protocol and registry."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn


@dataclass
class VisionInputs:
    """Vision inputs of a batch, in Qwen2.5-VL's conventions.

    Images of the whole batch are concatenated in row order; each image's pad tokens appear
    in its row's prompt as many times as it has merged patches.
    """

    pixel_values: Tensor
    """Float ``(num_patches_total, C * temporal_patch * patch * patch)``."""
    image_grid_thw: Tensor
    """Long ``(num_images, 3)``: temporal, height, width patches of each image."""
    mm_token_type_ids: Tensor | None = None
    """Int ``(B, n)``: 1 on image-pad tokens, 0 on text (recomputed from ids when None)."""

    def to(self, device: torch.device | str) -> VisionInputs:
        return VisionInputs(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                               for f in fields(self)})

    def select(self, rows: list[int], image_rows: Tensor) -> VisionInputs:
        """Vision inputs of a subset of rows. ``image_rows`` (num_images,) gives each image's row."""
        keep = torch.isin(image_rows, torch.tensor(rows, device=image_rows.device))
        per_image = self.image_grid_thw.prod(-1)
        starts = torch.cumsum(per_image, 0) - per_image
        pieces = [self.pixel_values[int(s): int(s) + int(c)] for s, c, k in zip(starts, per_image, keep) if k]
        mm = None if self.mm_token_type_ids is None else self.mm_token_type_ids[rows]
        return VisionInputs(torch.cat(pieces, 0), self.image_grid_thw[keep], mm)


class BackboneFamily:
    """How one family of Hugging Face models is driven. Subclass and override what differs.

    The defaults serve any text ``*ForCausalLM`` that exposes ``get_decoder()`` and
    ``get_output_embeddings()`` and uses 1-D RoPE positions ``0..n-1``.
    """

    name = "base"
    model_types: tuple[str, ...] = ()
    """``config.model_type`` values this family serves."""

    def decoder(self, model: nn.Module) -> nn.Module:
        """The transformer stack: called with ``inputs_embeds, position_ids, attention_mask, cache``."""
        return model.get_decoder()

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.get_output_embeddings()

    def head_logits(self, model: nn.Module, hidden: Tensor) -> Tensor:
        """``(..., D)`` decoder output -> ``(..., V)`` logits exactly as the family's own
        ``*ForCausalLM.forward`` computes them: the LM head, then any transform HF applies after
        it (Gemma-2/3 final soft-capping, Granite's ``logits_scaling``, Cohere's ``logit_scale``).
        Override :meth:`transform_logits` for such a transform."""
        return self.transform_logits(model, self.lm_head(model)(hidden))

    def transform_logits(self, model: nn.Module, logits: Tensor) -> Tensor:
        """What the family's forward does to the LM head's output (default: nothing)."""
        return logits

    def attn_implementation(self, model: nn.Module, backend: str) -> str:
        """The library backend to use when ``backend`` is asked for: a family whose HF class
        refuses SDPA (Gemma-2: soft-capped attention scores) runs ``eager`` with additive masks."""
        if backend == "sdpa" and getattr(type(model), "_supports_sdpa", True) is False:
            return "eager"
        return backend

    def router_aux_weight(self, model: nn.Module) -> float:
        """Weight of the router's load-balancing loss in training (0: none; mixture-of-experts
        families: HF's ``router_aux_loss_coef`` when ``output_router_logits`` is set)."""
        return 0.0

    def router_aux_loss(self, model: nn.Module, router_logits: tuple[Tensor, ...], valid: Tensor) -> Tensor:
        """The unweighted load-balancing loss over the real tokens ``valid`` ``(B, T)``."""
        raise NotImplementedError(f"family {self.name!r} has no router")

    def input_embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.get_input_embeddings()

    def text_config(self, model: nn.Module):
        """The config holding ``vocab_size``, ``max_position_embeddings`` and the like."""
        return model.config.get_text_config()

    def embed(self, model: nn.Module, input_ids: Tensor, vision: VisionInputs | None) -> Tensor:
        """``(B, n)`` ids -> ``(B, n, D)`` input embeddings (vision features scattered in)."""
        if vision is not None:
            raise ValueError(f"backbone family {self.name!r} takes no vision inputs")
        return self.input_embeddings(model)(input_ids)

    def positions(self, model: nn.Module, input_ids: Tensor, valid: Tensor,
                  vision: VisionInputs | None) -> tuple[Tensor, Tensor]:
        """Position ids of a right-padded clean stream, and each row's offset for later tokens.

        Returns ``(positions, delta)``: ``positions`` is ``(B, n)`` (or ``(R, B, n)`` for multi-axis
        RoPE) and ``delta`` ``(B, 1)`` such that the token at clean index ``i`` beyond the prompt
        sits at :meth:`text_positions` ``(i, delta)``.
        """
        b, n = input_ids.shape
        pos = torch.arange(n, device=input_ids.device).expand(b, n)
        return pos, torch.zeros(b, 1, dtype=torch.long, device=input_ids.device)

    def text_positions(self, index: Tensor, delta: Tensor) -> Tensor:
        """Positions of text tokens at clean indices ``index`` ``(B, K)``; same layout as :meth:`positions`."""
        return index + delta


ROUTER_AUX = "_blockdistill_router_aux"
"""Attribute where a training forward leaves its weighted router loss (see :func:`pop_router_aux`)."""


def pop_router_aux(model: nn.Module) -> Tensor | None:
    """The weighted router load-balancing loss of the last training forward of ``model`` (an HF
    model, or a ``BlockDiffusionLM``) when its family has one (mixture of experts with
    ``output_router_logits``), once; None otherwise. The Lightning systems add it to their loss,
    as HF's ``*ForCausalLM.forward`` adds it to its own."""
    inner = model.model if hasattr(model, "spec") and hasattr(model, "family") else model
    return inner.__dict__.pop(ROUTER_AUX, None)


_REGISTRY: dict[str, BackboneFamily] = {}

REFUSED: dict[str, str] = {
    "mamba": "a state-space model: it has no attention, so there is no mask to make block-causal",
    "mamba2": "a state-space model: it has no attention, so there is no mask to make block-causal",
    "falcon_mamba": "a state-space model: it has no attention, so there is no mask to make block-causal",
    "rwkv": "a recurrent model: it has no attention, so there is no mask to make block-causal",
    "recurrent_gemma": "its recurrent (RG-LRU) layers mix tokens strictly left to right whatever the mask says",
    "jamba": "its Mamba layers mix tokens strictly left to right whatever the attention mask says",
    "falcon_h1": "its Mamba layers mix tokens strictly left to right whatever the attention mask says",
    "bamba": "its Mamba layers mix tokens strictly left to right whatever the attention mask says",
    "zamba": "its Mamba layers mix tokens strictly left to right whatever the attention mask says",
    "zamba2": "its Mamba layers mix tokens strictly left to right whatever the attention mask says",
    "lfm2": "its short-convolution layers mix tokens strictly left to right whatever the attention mask says",
}
"""``model_type`` values that cannot run block masks, with the reason :func:`family_for` gives."""


def register_family(family: BackboneFamily) -> BackboneFamily:
    """Make ``family`` serve every ``model_type`` in ``family.model_types``."""
    for t in family.model_types:
        _REGISTRY[t] = family
    return family


def registered_families() -> dict[str, BackboneFamily]:
    return dict(_REGISTRY)


def family_for(model: nn.Module) -> BackboneFamily:
    """The family hook for ``model``, by ``config.model_type``."""
    mt = getattr(model.config, "model_type", None)
    if mt in _REGISTRY:
        return _REGISTRY[mt]
    if mt in REFUSED:
        raise ValueError(f"model_type={mt!r} cannot be driven as a block-diffusion model: {REFUSED[mt]}. "
                         "Block diffusion needs every token-mixing layer to follow the block attention mask.")
    raise ValueError(
        f"no backbone family registered for model_type={mt!r}; registered: {sorted(_REGISTRY)}. "
        "Add one with blockdistill.models.families.register_family (see docs: 'Add a backbone family')."
    )
