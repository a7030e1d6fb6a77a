"""LoRA adapters for the RAD and DCD stages, through PEFT.

:func:`apply_lora` puts PEFT LoRA adapters on the linear layers of a
:class:`~blockdistill.models.adapter.BlockDiffusionLM`'s text decoder and keeps the ``[MASK]``
rows trainable with PEFT's ``trainable_token_indices`` (the input-embedding row; the LM-head row
too, through PEFT's weight tying when the head is tied, wrapped on its own when it is not).
Every other weight is frozen, so the optimiser and the checkpoints of a LoRA run hold only the
adapters and those rows. The backbone is changed in place: ``bd.model`` stays the same object
(PEFT swaps its linear layers for LoRA layers), so the family helpers, the samplers and the
losses run on it unchanged.

:func:`merge_lora` folds the adapters into the weights (PEFT ``merge_and_unload``): a plain
model again, what the samplers load. :func:`save_adapter` / :func:`load_lora` write and read
the adapter alone (PEFT's layout, safetensors, plus the block rules).

Example::

    bd = wrap_for_stage(model, tok, block_size=8)
    apply_lora(bd, LoraConfig(r=16, alpha=32))
    ...  # train
    bd.save_pretrained("runs/rad/model", tokenizer=tok)           # merged (default)
    bd.save_pretrained("runs/rad/adapter", lora="adapter")        # the adapter alone
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from blockdistill.config import LoraConfig

if TYPE_CHECKING:
    from blockdistill.models.adapter import BlockDiffusionLM

__all__ = ["BLOCK_RULES_FILE", "apply_lora", "is_lora", "load_lora", "lora_targets", "merge_lora", "save_adapter",
           "trainable_parameter_names"]

BLOCK_RULES_FILE = "blockdistill_block.json"
"""Written next to a saved adapter: the block rules of the model it was trained on."""

_PEFT = "_peft_model"


def _peft():
    try:
        import peft
    except ImportError as e:  # pragma: no cover - peft is in the lora extra, installed by make install
        raise ImportError("LoRA needs PEFT: pip install 'blockdistill[lora]' (or pip install peft)") from e
    return peft


def is_lora(bd: nn.Module) -> bool:
    """Whether ``bd`` (a :class:`BlockDiffusionLM`) carries unmerged LoRA adapters."""
    return getattr(bd, _PEFT, None) is not None


def _module_name(root: nn.Module, module: nn.Module) -> str:
    for name, m in root.named_modules():
        if m is module:
            return name
    raise ValueError(f"{type(module).__name__} is not a submodule of {type(root).__name__}")


def lora_targets(bd: BlockDiffusionLM, target_modules: list[str] | None = None) -> list[str]:
    """Full names (in ``bd.model``) of the text decoder's linear layers that get adapters.

    ``target_modules`` are names or name suffixes (``q_proj``, ``self_attn.q_proj``); None means
    every linear layer of the text decoder. Layers outside the text decoder (the LM head, a
    vision tower) are never targets. A name that matches nothing raises ``ValueError`` listing
    the layer names there are.
    """
    if is_lora(bd):
        raise ValueError("this model already carries LoRA adapters; its layers are PEFT's now")
    decoder = bd.family.decoder(bd.model)
    prefix = _module_name(bd.model, decoder)
    linears = [f"{prefix}.{n}" if prefix else n for n, m in decoder.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the text decoder of this {bd.family.name} model has no linear layers to adapt")
    if target_modules is None:
        return linears
    chosen, unmatched = [], []
    for t in target_modules:
        hits = [n for n in linears if n == t or n.endswith("." + t)]
        (chosen.extend(hits) if hits else unmatched.append(t))
    if unmatched:
        kinds = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise ValueError(f"lora.target_modules: {unmatched} match no linear layer of the text decoder; "
                         f"its layers are named {kinds}")
    return sorted(set(chosen), key=linears.index)


def _token_rows(bd: BlockDiffusionLM) -> dict[str, list[int]]:
    """The ``[MASK]`` rows PEFT keeps trainable: the input embedding's, and an untied LM head's."""
    model, mask = bd.model, bd.spec.mask_token_id
    emb = bd.family.input_embeddings(model)
    rows = {_module_name(model, emb): [mask]}
    head = bd.family.lm_head(model)
    tied = head is not None and getattr(head, "weight", None) is emb.weight
    if head is not None and not tied and isinstance(head, nn.Linear) and head.bias is None:
        rows[_module_name(model, head)] = [mask]
    return rows


def apply_lora(bd: BlockDiffusionLM, cfg: LoraConfig) -> BlockDiffusionLM:
    """Put LoRA adapters on ``bd`` (in place) as ``cfg`` says and freeze every other weight but
    the ``[MASK]`` rows. Returns ``bd``. Adapters start at zero (PEFT's ``B = 0``): the model's
    outputs are unchanged until it trains."""
    if is_lora(bd):
        raise ValueError("this model already carries LoRA adapters; merge them (merge_lora) before adding new ones")
    peft = _peft()
    pcfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                           target_modules=lora_targets(bd, cfg.target_modules),
                           trainable_token_indices=_token_rows(bd))
    peft_model = peft.get_peft_model(bd.model, pcfg)
    if peft_model.base_model.model is not bd.model:  # PEFT injects in place; anything else is a bug here
        raise RuntimeError("PEFT did not adapt the model in place")
    bd.__dict__[_PEFT] = peft_model  # not a submodule: its parameters are bd.model's, registered once
    bd.__dict__["lora_config"] = cfg
    return bd


def trainable_parameter_names(module: nn.Module) -> list[str]:
    """Names of ``module``'s parameters that train (``requires_grad``), in ``state_dict`` spelling."""
    return [n for n, p in module.named_parameters() if p.requires_grad]


def merge_lora(bd: BlockDiffusionLM) -> BlockDiffusionLM:
    """Fold the adapters and the trained ``[MASK]`` rows into the weights, in place (PEFT
    ``merge_and_unload``): ``bd.model`` is a plain backbone again, the same object (its weights
keep ``requires_grad`` as they were: frozen). Returns ``bd``."""
    peft_model = bd.__dict__.pop(_PEFT, None)
    bd.__dict__.pop("lora_config", None)
    if peft_model is None:
        raise ValueError("this model carries no LoRA adapters")
    merged = peft_model.merge_and_unload()
    if merged is not bd.model:
        raise RuntimeError("PEFT merged into another object than the model")
    return bd


class _AdapterWriter:
    """What :func:`~blockdistill.models.adapter.atomic_save_pretrained` saves for an adapter."""

    def __init__(self, bd: BlockDiffusionLM) -> None:
        self.bd = bd

    def save_pretrained(self, path: str | os.PathLike, **kwargs: Any) -> None:
        getattr(self.bd, _PEFT).save_pretrained(str(path), **kwargs)
        (Path(path) / BLOCK_RULES_FILE).write_text(json.dumps(asdict(self.bd.spec), indent=2) + "\n")


def save_adapter(bd: BlockDiffusionLM, path: str | os.PathLike, tokenizer: Any = None) -> None:
    """Atomically write the adapter alone (PEFT's ``adapter_config.json`` and
    ``adapter_model.safetensors``, the trained ``[MASK]`` rows included) and the block rules.
    The model keeps its adapters."""
    from blockdistill.models.adapter import atomic_save_pretrained

    if not is_lora(bd):
        raise ValueError("this model carries no LoRA adapters to save; save the model itself")
    atomic_save_pretrained(_AdapterWriter(bd), path, tokenizer=tokenizer)


def load_lora(bd: BlockDiffusionLM, path: str | os.PathLike, *, merge: bool = False,
              trainable: bool = False) -> BlockDiffusionLM:
    """Put the adapter saved in ``path`` (by :func:`save_adapter`) back on ``bd``, its base
    model built the way it was for training (same checkpoint, same block rules). Weights are
    read with safetensors; no code runs. ``merge=True`` folds it in (:func:`merge_lora`).

    Raises ``ValueError`` when the saved block rules differ from ``bd``'s, and PEFT's error
    when the adapter names layers ``bd`` does not have.
    """
    from blockdistill.models.adapter import BlockSpec
    from blockdistill.utils.checksum import verify_model_dir

    path = Path(path)
    verify_model_dir(path)
    rules = path / BLOCK_RULES_FILE
    if not rules.is_file():
        raise ValueError(f"{path} is not an adapter saved by blockdistill (no {BLOCK_RULES_FILE})")
    saved = BlockSpec(**json.loads(rules.read_text()))
    if saved != bd.spec:
        raise ValueError(f"the adapter in {path} was trained on a model with block rules {saved}, this one has "
                         f"{bd.spec}")
    if is_lora(bd):
        raise ValueError("this model already carries LoRA adapters; merge them first")
    peft = _peft()
    peft_model = peft.PeftModel.from_pretrained(bd.model, str(path), is_trainable=trainable)
    if peft_model.base_model.model is not bd.model:
        raise RuntimeError("PEFT did not adapt the model in place")
    bd.__dict__[_PEFT] = peft_model
    return merge_lora(bd) if merge else bd
