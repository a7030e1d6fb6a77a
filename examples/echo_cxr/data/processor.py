"""Turns a chest X-ray study into the token/pixel tensors the ECHO library trains on.

One sample is a Qwen2.5-VL chat prompt (system, then a user turn holding every image of the
study and then the instruction, then an opened assistant turn) and the report as the response.
Two prompt styles (:data:`PROMPT_STYLES`, ``data.prompt_style``): ``echo``, the released ECHO
model's instructions and report layout (the ``lingshu7b`` configs), and ``compact``, a shorter
instruction for the tiny CPU demo (shown here)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|>*n<|vision_end|>Generate the findings and impression of this
    chest X-ray report.<|im_end|>\\n<|im_start|>assistant\\n            <- prompt_ids
    Findings: ...\\nImpression: ...                                    <- response_ids (NO EOS)

``n = grid_t * grid_h * grid_w / merge_size**2``. The response carries no EOS: the library's
collator appends EOS and pads to the block boundary itself (DESIGN.md §2).

Usage::

    proc = CXRProcessor(tokenizer, VisionSettings.tiny())       # patch 8, 64x64 -> 16 image tokens
    sample = proc(image, findings, impression, language="en")
    sample["prompt_ids"], sample["response_ids"], sample["pixel_values"], sample["image_grid_thw"]

Images go through ``Qwen2VLImageProcessorPil`` (the torchvision-based processor does not work
with this torch). Grayscale is converted to RGB, as the Qwen vision tower expects 3 channels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from examples.echo_cxr.data.records import CXRRecord
from examples.echo_cxr.data.tokenizer import special_token_ids


@dataclass(frozen=True)
class PromptText:
    system: str
    instruction: str


QWEN_SYSTEM = "You are a helpful assistant."
"""Qwen2.5-VL's default system line: its chat template inserts it when a conversation has none
(as ECHO's inference scripts send: one user turn, no system turn)."""

PROMPTS: dict[str, PromptText] = {
    "en": PromptText(QWEN_SYSTEM, "Generate the findings and impression of this chest X-ray report."),
    "zh": PromptText(QWEN_SYSTEM, "请生成这张胸部X光片报告的所见和印象。"),
}
"""The compact prompt of the tiny CPU demo (``data.prompt_style: compact``), per language."""

ECHO_PROMPTS: dict[str, PromptText] = {
    "en": PromptText(QWEN_SYSTEM, "Review this chest X-ray and write a report. "
                                  "Use this format: Findings: {}, Impression: {}."),
    "zh": PromptText(QWEN_SYSTEM, "这是一组胸部X光图像，请生成一份医学报告，包括所见和结论。"
                                  "以以下格式返回报告：所见：{} 结论：{}。"),
}
"""The released ECHO model's instructions (midea-ai/ECHO, ``eval/EasyEval/config.py``
``no_cot_eng_prompt`` / ``no_cot_zh_prompt``), sent verbatim, ``{}`` included
(``data.prompt_style: echo``, the ``lingshu7b`` configs)."""


@dataclass(frozen=True)
class PromptStyle:
    """A chat prompt and the report layout it asks for."""

    prompts: Mapping[str, PromptText]
    """Per language: system line and instruction."""
    headers: Mapping[str, tuple[str, str]]
    """Per language: the findings and impression headers of the response."""
    separator: str
    """Between the findings and the impression section."""


PROMPT_STYLES: dict[str, PromptStyle] = {
    "compact": PromptStyle(PROMPTS, {"en": ("Findings: ", "Impression: "), "zh": ("所见：", "印象：")}, "\n"),
    # ECHO's reference text (eval/EasyEval/evaluation.py): "Findings: {f} Impression: {i}", "所见：{f} 结论：{i}"
    "echo": PromptStyle(ECHO_PROMPTS, {"en": ("Findings: ", "Impression: "), "zh": ("所见：", "结论：")}, " "),
}
"""``data.prompt_style`` choices."""
_HEADERS = PROMPT_STYLES["compact"].headers


def prompt_style(name: str) -> PromptStyle:
    """The :data:`PROMPT_STYLES` entry ``name``; a clear error on an unknown one."""
    if name not in PROMPT_STYLES:
        raise ValueError(f"prompt_style={name!r}; expected one of {tuple(PROMPT_STYLES)}")
    return PROMPT_STYLES[name]


def prompt_templates(p: PromptText) -> tuple[str, str]:
    """The chat prompt's text before and after the image tokens (special tokens included)."""
    return (f"<|im_start|>system\n{p.system}<|im_end|>\n<|im_start|>user\n",
            f"{p.instruction}<|im_end|>\n<|im_start|>assistant\n")


def prompt_text_pieces(language: str = "en", style: str = "compact") -> list[str]:
    """The plain-text pieces of the chat prompt, split at special tokens as a tokenizer splits them."""
    texts = prompt_templates(prompt_style(style).prompts[language])
    pieces = [piece for text in texts for piece in re.split(r"<\|[a-z_]+\|>", text)]
    return [piece for piece in pieces if piece]


def format_report(findings: str, impression: str, language: str = "en", style: str = "compact") -> str:
    """The response text. ``compact``: ``Findings: ...\\nImpression: ...`` (``所见：...\\n印象：...``);
    ``echo``: ``Findings: ... Impression: ...`` (``所见：... 结论：...``). Empty sections are left out."""
    st = prompt_style(style)
    if language not in st.headers:
        raise ValueError(f"language={language!r}; expected one of {tuple(st.headers)}")
    parts = [h + t.strip() for h, t in zip(st.headers[language], (findings, impression)) if t.strip()]
    if not parts:
        raise ValueError("report has neither findings nor impression; expected at least one")
    return st.separator.join(parts)


def split_report(text: str, language: str | None = None) -> tuple[str, str]:
    """``(findings, impression)`` of a generated report in either style and language (the inverse
    of :func:`format_report`): the text after a findings header up to an impression header, and
    the text after the impression header. Without any header the whole text is the findings."""
    f_head = r"(?:Findings?\s*[:：]|所见\s*[:：])"
    i_head = r"(?:Impression\s*[:：]|结论\s*[:：]|印象\s*[:：])"
    text = text.strip()
    m = re.search(i_head, text, flags=re.IGNORECASE)
    body, impression = (text[: m.start()], text[m.end():]) if m else (text, "")
    fm = re.match(r"\s*" + f_head, body, flags=re.IGNORECASE)
    findings = body[fm.end():] if fm else body
    return findings.strip().rstrip(",，").strip(), impression.strip()


ECHO_MIN_PIXELS = 256 * 28 * 28
"""Per-image lower bound of the released ECHO (200,704 pixels)."""
ECHO_MAX_PIXELS = 1500 * 1500
"""Per-image upper bound of the released ECHO (2,250,000 pixels, also its processor's ``max_pixels``)."""


@dataclass(frozen=True)
class VisionSettings:
    """Image preprocessing; must match the model's ``vision_config``."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    """``vision_config.spatial_merge_size``."""
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, ...] = field(default=(0.48145466, 0.4578275, 0.40821073))
    image_std: tuple[float, ...] = field(default=(0.26862954, 0.26130258, 0.27577711))

    def __post_init__(self) -> None:
        for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels={self.max_pixels} < min_pixels={self.min_pixels}")
        factor = self.patch_size * self.merge_size
        if self.max_pixels < factor * factor:
            raise ValueError(f"max_pixels={self.max_pixels}; expected >= (patch*merge)^2 = {factor * factor}")

    @classmethod
    def tiny(cls, image_size: int = 64, patch_size: int = 8) -> VisionSettings:
        """Fixed ``image_size`` square images (e.g. 64 px, patch 8 -> 8x8 patches -> 16 image tokens)."""
        if image_size % (patch_size * 2):
            raise ValueError(f"image_size={image_size} must be a multiple of patch_size*merge_size={patch_size * 2}")
        return cls(patch_size=patch_size, min_pixels=image_size * image_size, max_pixels=image_size * image_size)

    @classmethod
    def echo(cls, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2) -> VisionSettings:
        """The released ECHO's bounds: per image ``min_pixels = 256*28*28`` and ``max_pixels = 1500**2``
        (its chat messages), which equals the processor call's ``max_pixels = 2_250_000``."""
        return cls(patch_size=patch_size, temporal_patch_size=temporal_patch_size, merge_size=merge_size,
                   min_pixels=ECHO_MIN_PIXELS, max_pixels=ECHO_MAX_PIXELS)

    @classmethod
    def from_vision_config(cls, vision_config: Any, **overrides: Any) -> VisionSettings:
        """Patch / temporal patch / merge sizes from a Qwen2.5-VL ``vision_config``."""
        kw = dict(
            patch_size=int(vision_config.patch_size),
            temporal_patch_size=int(vision_config.temporal_patch_size),
            merge_size=int(vision_config.spatial_merge_size),
        )
        return cls(**{**kw, **overrides})


def mm_token_type_ids(input_ids: torch.Tensor, image_token_id: int, video_token_id: int | None = None) -> torch.Tensor:
    """1 on image-pad tokens, 2 on video-pad tokens, 0 elsewhere. Same shape as ``input_ids``, int32."""
    out = (input_ids == image_token_id).int()
    if video_token_id is not None:
        out = out + 2 * (input_ids == video_token_id).int()
    return out


def mrope_position_ids(
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    spatial_merge_size: int = 2,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-VL 3-D (M-RoPE) position ids for images + text, equal to ``model.model.get_rope_index``.

    Text runs count up on all three axes; an image block of grid (t, h, w) takes
    (start + t_i, start + h_i, start + w_i) over its ``t * h/m * w/m`` tokens, and the next text
    starts at ``start + max(h, w)/m``. Padding (``attention_mask == 0``) gets position 0.

    Args:
        input_ids: LongTensor [B, T] (or [T]).
        token_type_ids: [B, T] (or [T]) from :func:`mm_token_type_ids`; videos are not supported.
        image_grid_thw: LongTensor [n_images, 3], images in order of appearance over the batch.
    Returns:
        position_ids LongTensor [3, B, T]; rope_deltas LongTensor [B, 1] (max position + 1 - length),
        so a later text token at index i sits at ``i + delta`` on every axis.
    """
    if input_ids.dim() == 1:
        input_ids, token_type_ids = input_ids[None], token_type_ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    if bool((token_type_ids == 2).any()):
        raise NotImplementedError("video tokens in mm_token_type_ids; only images are supported here")
    grids = iter([] if image_grid_thw is None else image_grid_thw.tolist())
    pos = torch.zeros(3, *input_ids.shape, dtype=torch.long, device=input_ids.device)
    deltas = []
    for b in range(input_ids.shape[0]):
        keep = torch.ones_like(input_ids[b], dtype=torch.bool) if attention_mask is None else attention_mask[b].bool()
        types = token_type_ids[b][keep].tolist()
        chunks, cur, i = [], 0, 0
        while i < len(types):
            j = i
            while j < len(types) and types[j] == types[i]:
                j += 1
            if types[i] == 0:
                chunks.append(torch.arange(j - i).expand(3, -1) + cur)
                cur += j - i
            else:
                try:
                    t, h, w = next(grids)
                except StopIteration:
                    raise ValueError("more image-token runs than rows in image_grid_thw") from None
                h, w = h // spatial_merge_size, w // spatial_merge_size
                if t * h * w != j - i:
                    raise ValueError(f"image run of {j - i} tokens but grid {t}x{h}x{w} after merge; expected equal")
                tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
                chunks.append(torch.stack([tt, hh, ww]).reshape(3, -1) + cur)
                cur += max(h, w)
            i = j
        flat = torch.cat(chunks, dim=1) if chunks else torch.zeros(3, 0, dtype=torch.long)
        pos[:, b, keep] = flat.to(pos.device)
        deltas.append(int(flat.max()) + 1 - len(types) if len(types) else 0)
    return pos, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


class ImageDecodeError(ValueError):
    """An image file could not be decoded (truncated, corrupt, not an image); names the file."""


def _to_pil(image: Image.Image | np.ndarray | str | Path) -> Image.Image:
    if isinstance(image, (str, Path)):
        try:  # the first full decode of the file: a truncated JPEG/PNG fails here, not in training
            with Image.open(image) as im:
                return im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            kind = "empty" if Path(image).is_file() and Path(image).stat().st_size == 0 else "undecodable"
            raise ImageDecodeError(f"{kind} image {image} ({type(err).__name__}: {err})") from None
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB")


class CXRProcessor:
    """Builds ECHO samples (prompt ids, response ids, pixels) for a Qwen2.5-VL backbone.

    Invariant: ``prompt_ids`` holds exactly ``image_grid_thw.prod(-1).sum() // merge_size**2``
    image-pad tokens, one run per image, in image order.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vision: VisionSettings | None = None,
        max_images: int | None = 1,
        prompts: Mapping[str, PromptText] | None = None,
        style: str = "compact",
    ) -> None:
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images={max_images}; expected >= 1 or None (every image of the study)")
        self.tokenizer = tokenizer
        self.vision = vision or VisionSettings()
        self.max_images = max_images
        self.style = style
        self.prompts = dict(prompts if prompts is not None else prompt_style(style).prompts)
        self.ids = special_token_ids(tokenizer)
        v = self.vision
        self.image_processor = Qwen2VLImageProcessorPil(
            patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size, merge_size=v.merge_size,
            min_pixels=v.min_pixels, max_pixels=v.max_pixels, image_mean=list(v.image_mean), image_std=list(v.image_std),
        )

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def process_images(self, images: Sequence[Image.Image | np.ndarray | str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize, normalise and patchify.

        Returns:
            pixel_values FloatTensor [n_patches, 3 * temporal_patch * patch * patch];
            image_grid_thw LongTensor [n_images, 3].
        """
        if not images:
            raise ValueError("no images; expected at least one per study")
        out = self.image_processor([_to_pil(im) for im in images], return_tensors="pt")
        return out["pixel_values"].float(), out["image_grid_thw"].long()

    def n_image_tokens(self, grid_thw: torch.Tensor) -> int:
        """Image-pad tokens for one image: ``t * h * w / merge_size**2``."""
        return int(grid_thw.prod()) // self.vision.merge_size**2

    def prompt_ids(self, image_grid_thw: torch.Tensor, language: str = "en") -> torch.Tensor:
        """LongTensor [P]: the chat prompt up to and including ``<|im_start|>assistant\\n``."""
        if language not in self.prompts:
            raise ValueError(f"language={language!r}; expected one of {tuple(self.prompts)}")
        head, tail = prompt_templates(self.prompts[language])
        ids = self._encode(head)
        for grid in image_grid_thw:
            # Pad tokens are appended as ids, not text: encoding n copies of a string is slow at 7B scale.
            ids += [self.ids.vision_start_token_id] + [self.ids.image_token_id] * self.n_image_tokens(grid)
            ids.append(self.ids.vision_end_token_id)
        ids += self._encode(tail)
        return torch.tensor(ids, dtype=torch.long)

    def response_ids(self, findings: str, impression: str, language: str = "en") -> torch.Tensor:
        """LongTensor [R]: the formatted report, WITHOUT EOS (the library's collator appends it)."""
        return torch.tensor(self._encode(format_report(findings, impression, language, self.style)), dtype=torch.long)

    def position_ids(
        self, input_ids: torch.Tensor, image_grid_thw: torch.Tensor, model: Any = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """M-RoPE ids [3, B, T] and deltas [B, 1]: ``model.model.get_rope_index`` if a model is given, else standalone."""
        ids = input_ids if input_ids.dim() == 2 else input_ids[None]
        mask = attention_mask if attention_mask is None or attention_mask.dim() == 2 else attention_mask[None]
        types = mm_token_type_ids(ids, self.ids.image_token_id)
        if model is not None:
            base = getattr(model, "model", model)
            return base.get_rope_index(ids, types, image_grid_thw=image_grid_thw, attention_mask=mask)
        return mrope_position_ids(ids, types, image_grid_thw, self.vision.merge_size, mask)

    def __call__(
        self,
        images: Image.Image | np.ndarray | str | Path | Sequence[Any],
        findings: str,
        impression: str,
        language: str = "en",
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One sample: the contract with the library's collator.

        Returns a dict with
            prompt_ids LongTensor [P]; response_ids LongTensor [R] (no EOS);
            pixel_values FloatTensor [n_patches, 3*tp*p*p]; image_grid_thw LongTensor [n_images, 3];
            mm_token_type_ids IntTensor [P] (1 on image pads); position_ids LongTensor [3, P];
            rope_delta int (response token j sits at position P + rope_delta + j on all axes);
            language str; study_id str; finding_labels dict | None; meta dict.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        pixel_values, grid = self.process_images(list(images)[: self.max_images])  # None: all of them
        prompt = self.prompt_ids(grid, language)
        pos, delta = mrope_position_ids(prompt, mm_token_type_ids(prompt, self.ids.image_token_id), grid, self.vision.merge_size)
        meta = dict(meta or {})
        return {
            "prompt_ids": prompt,
            "response_ids": self.response_ids(findings, impression, language),
            "pixel_values": pixel_values,
            "image_grid_thw": grid,
            "mm_token_type_ids": mm_token_type_ids(prompt, self.ids.image_token_id),
            "position_ids": pos[:, 0],
            "rope_delta": int(delta[0, 0]),
            "language": language,
            "study_id": str(meta.get("study_id", "")),
            "finding_labels": meta.get("labels"),
            "meta": meta,
        }

    def from_record(self, record: CXRRecord, image_root: str | Path | None = None) -> dict[str, Any]:
        """Sample from a :class:`CXRRecord`; relative image paths are resolved against ``image_root``."""
        if not record.image_paths:
            raise ValueError(f"record {record.key} has no image_paths; expected at least one image")
        paths = [Path(p) if image_root is None or Path(p).is_absolute() else Path(image_root) / p for p in record.image_paths]
        meta = {**record.metadata, "study_id": record.study_id, "source": record.source}
        try:
            return self(paths, record.findings, record.impression, record.language, meta)
        except ImageDecodeError as err:
            raise ImageDecodeError(f"study {record.key}: {err}") from None

    def from_synthetic(self, sample: Any, language: str = "en") -> dict[str, Any]:
        """Sample from a :class:`~examples.echo_cxr.data.synthetic.SyntheticSample` (in memory, no disk)."""
        meta = {"study_id": sample.study_id, "labels": dict(sample.labels), "seed": sample.seed, "source": "synthetic"}
        return self(sample.image, sample.findings[language], sample.impression[language], language, meta)
