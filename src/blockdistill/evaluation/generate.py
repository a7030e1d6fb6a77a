"""Generate a whole evaluation split with one variant: batching, progress bar, ids to text.

Examples are the dicts the library's :class:`~blockdistill.data.BlockCollator` takes
(``prompt_ids``, optional ``response_ids``, optional ``pixel_values``/``image_grid_thw``, any
extras). The reference text is ``example["reference"]`` (a str or a list of str) when present,
else the decoded ``response_ids``.

Every batch holds examples of one group only (language, source), so each group's NFE, TPF and
tokens/s are exact sums over its own sampler calls, not shares of mixed batches. Examples are
read once, in order; at most ``batch_size`` examples per group wait in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from blockdistill.data import BlockCollator
from blockdistill.evaluation.sampler import Variant
from blockdistill.evaluation.stats import RunStats
from blockdistill.evaluation.text import decode_ids
from blockdistill.utils.progress import LineProgress

__all__ = ["GroupKey", "Prediction", "SplitOutput", "default_lang", "default_source", "generate_split"]

GroupKey = tuple[str, str | None]
"""``(language, source)``; source is None when examples carry none."""


def default_lang(meta: Mapping[str, Any]) -> str:
    """``meta["lang"]`` or ``meta["language"]`` (also looked up in a nested ``meta["meta"]``); "en" when absent."""
    for d in (meta, meta.get("meta") or {}):
        for key in ("lang", "language"):
            if d.get(key):
                return str(d[key])
    return "en"


def default_source(meta: Mapping[str, Any]) -> str | None:
    """``meta["source"]`` (or ``meta["meta"]["source"]``); None when absent."""
    for d in (meta, meta.get("meta") or {}):
        if d.get("source"):
            return str(d["source"])
    return None


@dataclass
class Prediction:
    """One generated example."""

    index: int
    """Position in the split."""
    lang: str
    source: str | None
    prediction: str
    """Decoded generated text (EOS, pad and special tokens removed)."""
    references: list[str]
    """Reference texts (one or more)."""
    length: int
    """Generated tokens (EOS included when produced)."""
    meta: dict[str, Any] = field(repr=False, default_factory=dict)
    """The example's extras, as the collator passes them through."""

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "lang": self.lang, "source": self.source, "prediction": self.prediction,
                "references": list(self.references), "length": self.length}


@dataclass
class SplitOutput:
    """Predictions of one variant over a split (in split order) and statistics per group."""

    predictions: list[Prediction]
    stats: dict[GroupKey, RunStats]


def _references(example: Mapping[str, Any], tokenizer: Any) -> list[str]:
    ref = example.get("reference")
    if ref is None:
        if example.get("response_ids") is None:
            raise ValueError("example has neither 'reference' text nor 'response_ids'; expected one of them")
        ids = torch.as_tensor(example["response_ids"]).reshape(-1).tolist()
        return [tokenizer.decode(ids, skip_special_tokens=True).strip()]
    refs = [ref] if isinstance(ref, str) else list(ref)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"example 'reference' must be a str or a non-empty list of str, got {ref!r}")
    return refs


def _prompts(batch_ids: Tensor, prompt_lens: Tensor, pad_id: int) -> Tensor:
    """``(B, max P)`` prompts, right-padded with ``pad_id`` (the collator's rows continue with responses)."""
    width = int(prompt_lens.max())
    ids = batch_ids[:, :width].clone()
    ids[torch.arange(width)[None, :] >= prompt_lens[:, None]] = pad_id
    return ids


def generate_split(
    variant: Variant,
    examples: Iterable[Mapping[str, Any]],
    tokenizer: Any,
    *,
    batch_size: int = 8,
    lang_of: Callable[[Mapping[str, Any]], str] = default_lang,
    source_of: Callable[[Mapping[str, Any]], str | None] = default_source,
    warmup: int = 0,
    progress: bool = True,
    total: int | None = None,
) -> SplitOutput:
    """Decode every example with ``variant``.

    Args:
        variant: model + sampler; ``variant.tokenizer`` (when set) decodes its outputs.
        examples: collator-style example dicts (a list, a torch ``Dataset``, any iterable).
        tokenizer: decodes generated ids (unless the variant has its own) and ``response_ids``
            references.
        batch_size: examples per sampler call (all of one group).
        lang_of, source_of: group of an example, from its extras (everything but ids and pixels).
        warmup: extra untimed, discarded runs of the first batch (one-time kernel and allocator
            set-up would otherwise count against the first batch's throughput).
        progress: show a tqdm bar on a terminal, else log a line at most every 30 s
            (:class:`~blockdistill.utils.progress.LineProgress`).
        total: number of examples for the bar (default ``len(examples)`` when defined).
    Returns:
        :class:`SplitOutput`: one :class:`Prediction` per example, in split order, and
        :class:`RunStats` per ``(lang, source)`` group.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    model, spec = variant.model, variant.model.spec
    out_tok = variant.tokenizer if variant.tokenizer is not None else tokenizer
    block = 1 if variant.sampler.kind == "ar" else spec.block_size
    collate = BlockCollator(block, spec.eos_token_id, spec.pad_token_id)
    device = model.device
    param = next(model.parameters())
    drop = {spec.pad_token_id, spec.mask_token_id}
    if total is None and hasattr(examples, "__len__"):
        total = len(examples)  # type: ignore[arg-type]

    preds: dict[int, Prediction] = {}
    stats: dict[GroupKey, RunStats] = {}
    pending: dict[GroupKey, list[tuple[int, Mapping[str, Any]]]] = {}
    warm_left = warmup
    bar = tqdm(total=total, desc=variant.name, unit="ex", disable=not progress, leave=False)
    lines = LineProgress(f"generate {variant.name}", total) if progress else None  # no terminal: log lines

    def run(key: GroupKey, items: list[tuple[int, Mapping[str, Any]]]) -> None:
        nonlocal warm_left
        # Examples without a response still collate: the collator needs one, and nothing reads it.
        batch = collate([ex if ex.get("response_ids") is not None else {**ex, "response_ids": [spec.eos_token_id]}
                         for _, ex in items])
        prompt_ids = _prompts(batch.input_ids, batch.prompt_lens, spec.pad_token_id).to(device)
        prompt_lens = batch.prompt_lens.to(device)
        vision = None if batch.vision is None else batch.vision.to(device)
        if vision is not None and param.is_floating_point():
            vision.pixel_values = vision.pixel_values.to(param.dtype)
        for _ in range(warm_left):
            variant.generate(prompt_ids, prompt_lens, vision)
        warm_left = 0
        out = variant.generate(prompt_ids, prompt_lens, vision)
        stats.setdefault(key, RunStats()).add(out.stats)
        for (i, ex), seq, meta in zip(items, out.sequences, batch.meta):
            text = decode_ids(seq, out_tok, eos_id=spec.eos_token_id, drop_ids=drop)
            preds[i] = Prediction(i, key[0], key[1], text, _references(ex, tokenizer), int(seq.shape[0]), meta)
        bar.update(len(items))
        if lines is not None:
            lines.update(len(items))

    was_training = model.training
    model.eval()
    try:
        for i, ex in enumerate(examples):
            extras = {k: v for k, v in ex.items() if k not in ("prompt_ids", "response_ids", *BlockCollator.VISION_KEYS)}
            key = (lang_of(extras), source_of(extras))
            pending.setdefault(key, []).append((i, ex))
            if len(pending[key]) == batch_size:
                run(key, pending.pop(key))
        for key, items in list(pending.items()):
            run(key, items)
    finally:
        model.train(was_training)
        bar.close()
    return SplitOutput([preds[i] for i in sorted(preds)], stats)

