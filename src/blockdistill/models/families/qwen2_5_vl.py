"""Qwen2.5-VL (and Lingshu, which shares its architecture): vision features and M-RoPE."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from blockdistill.models.families.base import BackboneFamily, VisionInputs, register_family


class Qwen25VLFamily(BackboneFamily):
    """Image features are computed once by the vision tower and scattered into the image-pad
    slots; positions are the 3-D M-RoPE ids of ``get_rope_index``. The block grid never looks
    at these positions: it uses clean indices."""

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl", "qwen2_vl")

    def decoder(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.lm_head

    def input_embeddings(self, model: nn.Module) -> nn.Embedding:
        return model.model.get_input_embeddings()

    def _image_token_id(self, model: nn.Module) -> int:
        return int(model.config.image_token_id)

    def _token_types(self, model: nn.Module, input_ids: Tensor, vision: VisionInputs | None) -> Tensor:
        if vision is not None and vision.mm_token_type_ids is not None:
            return vision.mm_token_type_ids
        return (input_ids == self._image_token_id(model)).int()

    def embed(self, model: nn.Module, input_ids: Tensor, vision: VisionInputs | None) -> Tensor:
        emb = self.input_embeddings(model)(input_ids)
        n_pad = int((input_ids == self._image_token_id(model)).sum())
        if vision is None:
            if n_pad:
                raise ValueError(f"input has {n_pad} image-pad tokens but no vision inputs were given")
            return emb
        merge = model.config.vision_config.spatial_merge_size
        expected = int((vision.image_grid_thw.prod(-1) // merge**2).sum())
        if expected != n_pad:
            raise ValueError(
                f"vision inputs do not match the prompt: image_grid_thw gives {expected} image tokens "
                f"but the input ids hold {n_pad} image-pad tokens"
            )
        feats = model.model.get_image_features(vision.pixel_values, vision.image_grid_thw, return_dict=True)
        feats = torch.cat(feats.pooler_output, 0).to(emb.dtype)
        where = (input_ids == self._image_token_id(model))[..., None].expand_as(emb)
        return emb.masked_scatter(where, feats)

    def positions(self, model: nn.Module, input_ids: Tensor, valid: Tensor,
                  vision: VisionInputs | None) -> tuple[Tensor, Tensor]:
        pos, delta = model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=self._token_types(model, input_ids, vision),
            image_grid_thw=None if vision is None else vision.image_grid_thw,
            attention_mask=valid.long(),
        )
        return pos, delta.to(input_ids.device).long()

    def text_positions(self, index: Tensor, delta: Tensor) -> Tensor:
        return (index + delta)[None].expand(3, -1, -1)


register_family(Qwen25VLFamily())
