"""SDAR's checkpoint layout, in and out (JetAstra/SDAR; served by SGLang and LMDeploy).

An SDAR checkpoint is a Qwen3 (or Qwen3-MoE) checkpoint whose ``config.json`` says
``model_type: "sdar"`` (``"sdar_moe"``), ``architectures: ["SDARForCausalLM"]`` and adds
``block_size`` (and, in training configs, ``mask_token_id``); its tokenizer has ``<|MASK|>``;
blocks are aligned to index 0 and the logits at position i predict token i (no shift). The
weight names are Qwen3's.

- :func:`load_sdar` loads one into the stock ``Qwen3ForCausalLM`` (its ``auto_map`` is ignored);
- :func:`export_sdar` writes a blockdistill text model (Qwen3 backbone, ``shift=False``) in that
  layout, so an engine that serves SDAR serves it;
- :class:`SDARThreshold` and :class:`SDARConfidence` reproduce two details of SDAR's own
  ``block_diffusion_generate`` where blockdistill's threshold policy differs (docs/serving.md
  lists every difference).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from blockdistill.interop.checkpoints import (
    MASK_TOKEN,
    SDAR_TYPES,
    CheckpointError,
    load_released,
    read_checkpoint_config,
)
from blockdistill.models.adapter import CONFIG_KEY, BlockDiffusionLM
from blockdistill.utils.atomic import replace_dir

__all__ = ["SDARConfidence", "SDARThreshold", "export_sdar", "load_sdar", "sdar_transfer_counts"]

_EXPORT_TYPES = {"qwen3": ("sdar", "SDARForCausalLM"), "qwen3_moe": ("sdar_moe", "SDARMoeForCausalLM")}


def load_sdar(path: str | os.PathLike, *, block_size: int | None = None, **kwargs: Any) -> tuple[BlockDiffusionLM, Any]:
    """Load an SDAR-layout checkpoint (``model_type`` ``sdar``/``sdar_moe``) without its remote code.

    Block size and mask id come from the checkpoint (``block_size`` in its config; ``<|MASK|>``
    in its tokenizer or ``mask_token_id`` in its config), shift is False. ``block_size`` may be
    given for a config that lacks it; it must agree with one that has it. Other keyword
    arguments are those of :func:`~blockdistill.interop.checkpoints.load_released`.
    """
    ckpt = read_checkpoint_config(path)
    if ckpt.source_type not in SDAR_TYPES:
        raise CheckpointError(f"{ckpt.path}: model_type={ckpt.source_type!r} is not an SDAR checkpoint "
                              f"({sorted(SDAR_TYPES)}); use load_released for other layouts")
    return load_released(path, block_size=block_size, **kwargs)


def _sdar_config(model_cfg: dict[str, Any], spec, source_type: str) -> dict[str, Any]:
    """A Qwen3 config dict in SDAR's form: SDAR's type and class, ``block_size``,
    ``mask_token_id``, and RoPE / dtype keys as transformers 4.5x (which SDAR pins) writes them."""
    sdar_type, arch = _EXPORT_TYPES[source_type]
    cfg = {k: v for k, v in model_cfg.items() if k not in (CONFIG_KEY, "auto_map", "architectures", "model_type",
                                                           "transformers_version")}
    rope = cfg.pop("rope_parameters", None) or {}
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    extra = {k: v for k, v in rope.items() if k not in ("rope_theta", "rope_type")}
    cfg["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else {
        "rope_type": rope["rope_type"], **extra}
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    cfg.pop("layer_types", None)
    cfg.update(model_type=sdar_type, architectures=[arch], block_size=spec.block_size,
               mask_token_id=spec.mask_token_id, eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id)
    return cfg


def _rename_mask_token(out: Path, mask_id: int, old: str) -> None:
    """Give token ``mask_id`` the text ``<|MASK|>`` in a saved fast tokenizer (and make it the
    tokenizer's ``mask_token``, which SDAR's generation script reads)."""
    tj = out / "tokenizer.json"
    if not tj.is_file():
        raise CheckpointError(f"the tokenizer saved no tokenizer.json in {out}; SDAR export needs a fast tokenizer")
    data = json.loads(tj.read_text())
    hits = [t for t in data.get("added_tokens", []) if t["id"] == mask_id]
    if not hits:
        raise CheckpointError(f"mask id {mask_id} is not an added token of the tokenizer ({old!r})")
    for t in hits:
        t["content"], t["special"] = MASK_TOKEN, True
    tj.write_text(json.dumps(data, ensure_ascii=False, indent=2))
    tc = out / "tokenizer_config.json"
    conf = json.loads(tc.read_text()) if tc.is_file() else {}
    dec = conf.get("added_tokens_decoder", {})
    if str(mask_id) in dec:
        dec[str(mask_id)]["content"] = MASK_TOKEN
    for key in ("additional_special_tokens", "extra_special_tokens"):
        if isinstance(conf.get(key), list):
            conf[key] = [MASK_TOKEN if t == old else t for t in conf[key]]
    conf["mask_token"] = MASK_TOKEN
    tc.write_text(json.dumps(conf, ensure_ascii=False, indent=2))
    sm = out / "special_tokens_map.json"
    if sm.is_file():
        m = json.loads(sm.read_text())
        m = {k: ([MASK_TOKEN if t == old else t for t in v] if isinstance(v, list) else v) for k, v in m.items()}
        m["mask_token"] = MASK_TOKEN
        sm.write_text(json.dumps(m, ensure_ascii=False, indent=2))


def export_sdar(model: BlockDiffusionLM, tokenizer: Any, path: str | os.PathLike, *,
                remote_code_from: str | os.PathLike | None = None) -> Path:
    """Write ``model`` in SDAR's layout at ``path`` (atomically: a crash leaves no half-written dir).

    Writes Qwen3 weight names (safetensors), an SDAR ``config.json`` (``model_type``,
    ``architectures``, ``block_size``, ``mask_token_id``), ``generation_config.json`` with the
    EOS id, and the tokenizer with the mask token renamed ``<|MASK|>``.

    ``remote_code_from``: a released SDAR checkpoint directory whose ``*.py`` files and
    ``auto_map`` are copied alongside, for tools that load SDAR configs through
    ``trust_remote_code`` (blockdistill never imports them). Without it the export has no
    ``auto_map``.

    Raises:
        CheckpointError: the model was trained with ``shift=True`` (SDAR reads the logits at
            position i for token i: retrain the RAD stage with ``block.shift=false``), its
            backbone is not Qwen3 / Qwen3-MoE, or the tokenizer cannot carry ``<|MASK|>``.
    """
    spec = model.spec
    if spec.shift:
        raise CheckpointError(
            "this model was trained with shift=True (the logits at position i-1 predict token i, as in an AR "
            "head); SDAR's format and the engines that serve it (SGLang, LMDeploy) read the logits at "
            "position i for token i, so it would decode wrong tokens. Retrain the RAD stage with "
            "block.shift=false (then distill that model) and export the result")
    source_type = getattr(model.model.config, "model_type", None)
    if source_type not in _EXPORT_TYPES:
        raise CheckpointError(f"SDAR's layout is Qwen3's (or Qwen3-MoE's); this model's backbone is "
                              f"model_type={source_type!r}, which SDAR engines cannot load")
    if tokenizer is None:
        raise CheckpointError("export_sdar needs the model's tokenizer (SDAR checkpoints ship one with <|MASK|>)")
    mask_text = tokenizer.convert_ids_to_tokens(spec.mask_token_id)
    taken = tokenizer.get_vocab().get(MASK_TOKEN)
    if taken is not None and taken != spec.mask_token_id:
        raise CheckpointError(f"the tokenizer already has {MASK_TOKEN!r} as id {taken}, but the model's mask id "
                              f"is {spec.mask_token_id}")
    code_files: list[Path] = []
    auto_map = None
    if remote_code_from is not None:
        src = read_checkpoint_config(remote_code_from)
        auto_map = src.remote_code
        code_files = sorted(Path(remote_code_from).glob("*.py"))
        if not auto_map or not code_files:
            raise CheckpointError(f"{remote_code_from}: no auto_map or no *.py files to copy")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        model.model.save_pretrained(tmp)
        cfg = _sdar_config(json.loads((tmp / "config.json").read_text()), spec, source_type)
        if auto_map:
            cfg["auto_map"] = auto_map
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        eos = list(spec.eos_token_ids) + ([spec.pad_token_id] if spec.pad_token_id not in spec.eos_token_ids else [])
        (tmp / "generation_config.json").write_text(json.dumps(
            {"eos_token_id": eos, "pad_token_id": spec.pad_token_id, "do_sample": False}, indent=2))
        tokenizer.save_pretrained(tmp)
        if mask_text != MASK_TOKEN:
            _rename_mask_token(tmp, spec.mask_token_id, mask_text)
        for f in code_files:
            shutil.copy2(f, tmp / f.name)
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ---------------------------------------------------------------------- SDAR's decoding rules
def sdar_transfer_counts(block_size: int, steps: int) -> list[int]:
    """SDAR's minimum number of tokens committed at each denoising step: ``block_size`` spread
    over ``steps`` as evenly as possible, the remainder on the first steps."""
    if not 1 <= steps <= block_size:
        raise ValueError(f"denoising steps must be in [1, block_size={block_size}], got {steps}")
    base, rem = divmod(block_size, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


@dataclass(frozen=True)
class SDARThreshold:
    """SDAR's ``low_confidence_dynamic`` rule as an unmasking policy.

    At step ``s`` (1-based) with quota ``q_s = sdar_transfer_counts(L, steps)[s-1]``: if at
    least ``q_s`` candidates have confidence strictly above ``tau`` they are all committed,
    else the ``q_s`` most confident ones (``static=True``: always those, SDAR's
    ``low_confidence_static``). With ``steps == L`` every quota is 1 and this is exactly
    :class:`~blockdistill.sampling.policies.ConfidenceThreshold`. Where fewer candidates remain
    than the quota, all are committed (SDAR's ``topk`` would also re-commit an already
    decoded position there; see docs/serving.md).
    """

    block_size: int
    steps: int
    tau: float = 0.85
    static: bool = False
    needs_confidence: bool = True
    commits_all: bool = False

    def __post_init__(self) -> None:
        sdar_transfer_counts(self.block_size, self.steps)
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")

    def __call__(self, confidence: Tensor | None, candidate: Tensor, step: int) -> Tensor:
        counts = sdar_transfer_counts(self.block_size, self.steps)
        quota = counts[step - 1] if step <= len(counts) else 1
        score = confidence.masked_fill(~candidate, float("-inf"))
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        top = candidate & (rank < quota)
        if self.static:
            return top
        passed = candidate & (confidence > self.tau)
        return torch.where(passed.sum(1, keepdim=True) >= quota, passed, top)


class SDARConfidence:
    """A :class:`~blockdistill.sampling.denoiser.Denoiser` wrapper whose confidences are SDAR's.

    blockdistill's sampler removes the mask token before the softmax, so its confidence is
    ``p(top) / (1 - p(mask))``; SDAR's is ``p(top)`` of the full softmax. This wrapper appends
    one phantom logit column carrying the mask token's logit (capped just below the best real
    logit, so the phantom is never the argmax): the sampler's softmax then holds the mask's
    mass again. Token choices are unchanged; only threshold decisions can move.
    """

    def __init__(self, denoiser: Any) -> None:
        self.inner = denoiser
        self.spec = denoiser.spec

    @property
    def max_context(self) -> int | None:
        return self.inner.max_context

    def prefill(self, prompt_ids: Tensor, prompt_lens: Tensor, vision: Any = None):
        state, last = self.inner.prefill(prompt_ids, prompt_lens, vision)
        return state, None if last is None else self._with_mask_mass(last)

    def forward(self, state: Any, query_ids: Tensor, query_index: Tensor, append: int,
                logits_at: Tensor | None) -> Tensor | None:
        out = self.inner.forward(state, query_ids, query_index, append, logits_at)
        return None if out is None else self._with_mask_mass(out)

    def select_rows(self, state: Any, rows: Tensor) -> Any:
        return self.inner.select_rows(state, rows)

    def _with_mask_mass(self, logits: Tensor) -> Tensor:
        m = self.spec.mask_token_id
        others = torch.cat([logits[..., :m], logits[..., m + 1:]], -1).amax(-1, keepdim=True)
        below = torch.nextafter(others, torch.full_like(others, float("-inf")))
        return torch.cat([logits, torch.minimum(logits[..., m: m + 1], below)], -1)
