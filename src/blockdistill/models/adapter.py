"""``BlockDiffusionLM``: a Hugging Face causal LM (or Qwen2.5-VL) driven as a block-diffusion model.

The wrapper never changes the backbone. It adds one ``[MASK]`` token, stores the block rules
(block size, mask id, EOS id, pad id, shift) in the model's config so that
``save_pretrained``/``from_pretrained`` bring them back, and runs the backbone on any
:class:`~blockdistill.layout.SlotLayout` with the attention backend chosen in config.

Example::

    model = AutoModelForCausalLM.from_pretrained(path)
    bd = BlockDiffusionLM.from_causal_lm(model, tokenizer, block_size=8)
    logits = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
    bd.save_pretrained("runs/rad/model", tokenizer=tokenizer)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from blockdistill.layout import SlotLayout, clean_layout, padding_mask, training_layout
from blockdistill.models.attention import (
    Windows,
    check_backend,
    check_windows,
    hf_attn_implementation,
    render_mask,
)
from blockdistill.models.backbones import stop_ids
from blockdistill.models.families import BackboneFamily, VisionInputs, family_for
from blockdistill.models.families.base import ROUTER_AUX
from blockdistill.utils.atomic import replace_dir
from blockdistill.utils.checksum import verify_model_dir, write_dir_manifest

CONFIG_KEY = "blockdistill"


@dataclass(frozen=True)
class BlockSpec:
    """The block rules saved with a model. Every stage reads them from here."""

    block_size: int
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int
    shift: bool = False
    eos_token_ids: tuple[int, ...] = ()
    """Every id that ends a sequence (Llama-3-Instruct, Qwen2.5-Instruct list several in their
    generation config); ``eos_token_id`` is the first of them, the one that pads a finished block.
    Empty (default): ``(eos_token_id,)``."""

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.eos_token_ids) or (int(self.eos_token_id),)
        if ids[0] != self.eos_token_id:
            raise ValueError(f"eos_token_ids={list(ids)} must start with eos_token_id={self.eos_token_id} "
                             "(the id that pads); use BlockSpec.with_eos to change both")
        if len(set(ids)) != len(ids):
            raise ValueError(f"eos_token_ids={list(ids)} repeats an id")
        object.__setattr__(self, "eos_token_ids", ids)

    def with_eos(self, ids: int | Sequence[int]) -> BlockSpec:
        """The same rules stopping at ``ids`` (an id or a list; the first pads)."""
        ids = [int(ids)] if isinstance(ids, int) else [int(i) for i in dict.fromkeys(ids)]
        if not ids:
            raise ValueError("eos_token_id: an empty list of EOS ids")
        return replace(self, eos_token_id=ids[0], eos_token_ids=tuple(ids))

    def is_eos(self, tokens: Tensor) -> Tensor:
        """Bool, shaped like ``tokens``: the token is one of ``eos_token_ids`` (it ends a
        sequence). Every sampler's stop rule (and the relabelling's) asks this one method."""
        if len(self.eos_token_ids) == 1:
            return tokens == self.eos_token_id
        return torch.isin(tokens, torch.tensor(self.eos_token_ids, dtype=tokens.dtype, device=tokens.device))


class BlockDiffusionLM(nn.Module):
    """A backbone plus its block rules.

    Invariant: ``spec`` is mirrored in ``model.config.blockdistill``; the mask id is a token
    added for this purpose, never one of the backbone's real tokens.
    """

    def __init__(self, model: nn.Module, spec: BlockSpec, attn_backend: str = "sdpa",
                 family: BackboneFamily | None = None, real_vocab_size: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.family = family or family_for(model)
        rows = self.family.input_embeddings(model).num_embeddings
        if not 0 <= spec.mask_token_id < rows:
            raise ValueError(f"mask_token_id={spec.mask_token_id} is outside the embedding matrix (0..{rows - 1})")
        if real_vocab_size is not None and spec.mask_token_id < real_vocab_size:
            raise ValueError(
                f"mask_token_id={spec.mask_token_id} collides with a real token (the tokenizer's vocabulary "
                f"has {real_vocab_size} tokens); add a dedicated [MASK] token with from_causal_lm"
            )
        if spec.mask_token_id in (*spec.eos_token_ids, spec.pad_token_id):
            raise ValueError(f"mask_token_id={spec.mask_token_id} must differ from the EOS and pad ids")
        if spec.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {spec.block_size}")
        self.spec = spec
        self.attn_backend = attn_backend
        self.windows = check_windows(model, self.family.decoder(model))
        """Each layer type's sliding window (:func:`~blockdistill.models.attention.layer_windows`):
        every mask this model renders is intersected with them."""
        model.config.__dict__[CONFIG_KEY] = asdict(spec)
        self.set_attn_backend(attn_backend)

    # ------------------------------------------------------------------ construction and I/O
    @classmethod
    def from_causal_lm(cls, model: nn.Module, tokenizer: Any, *, block_size: int, shift: bool = False,
                       mask_token: str = "[MASK]", eos_token_id: int | Sequence[int] | None = None,
                       pad_token_id: int | None = None, attn_backend: str = "sdpa") -> BlockDiffusionLM:
        """Wrap an AR model: add ``mask_token`` to ``tokenizer`` and resize embeddings once.

        The new embedding row (and LM-head row when untied) is the mean of the existing rows,
        so the mask token starts as a neutral "average token".
        """
        family = family_for(model)
        existing = tokenizer.get_vocab().get(mask_token)
        if existing is not None and mask_token not in tokenizer.all_special_tokens:
            raise ValueError(f"mask token {mask_token!r} already exists as a real token (id {existing}); choose another")
        if existing is None:
            tokenizer.add_special_tokens({"additional_special_tokens": [mask_token]}, replace_extra_special_tokens=False)
        # A tokenizer that already carries the mask token (saved by an earlier stage) is reused.
        mask_id = tokenizer.convert_tokens_to_ids(mask_token)
        real_vocab = mask_id  # added tokens sit after the real vocabulary
        emb = family.input_embeddings(model)
        fresh_row = existing is None or mask_id >= emb.num_embeddings
        if mask_id >= emb.num_embeddings:
            model.resize_token_embeddings(mask_id + 1, mean_resizing=False)
            emb = family.input_embeddings(model)
        if fresh_row:
            with torch.no_grad():
                emb.weight[mask_id] = emb.weight[:real_vocab].mean(0)
                head = family.lm_head(model)
                if head is not None and head.weight is not emb.weight:
                    head.weight[mask_id] = head.weight[:real_vocab].mean(0)
                    if getattr(head, "bias", None) is not None:
                        head.bias[mask_id] = head.bias[:real_vocab].mean()
        eos = stop_ids(model, tokenizer, eos_token_id)
        pad = pad_token_id if pad_token_id is not None else (tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0])
        spec = BlockSpec(block_size=block_size, mask_token_id=mask_id, eos_token_id=eos[0], pad_token_id=pad, shift=shift,
                         eos_token_ids=tuple(eos))
        return cls(model, spec, attn_backend=attn_backend, family=family, real_vocab_size=real_vocab)

    @classmethod
    def from_model(cls, model: nn.Module, attn_backend: str = "sdpa") -> BlockDiffusionLM:
        """Wrap a model whose config already carries ``blockdistill`` block rules."""
        stored = getattr(model.config, CONFIG_KEY, None)
        if not stored:
            raise ValueError("model config has no 'blockdistill' block rules; convert it with from_causal_lm first")
        return cls(model, BlockSpec(**stored), attn_backend=attn_backend)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, attn_backend: str = "sdpa",
                        trust_remote_code: bool = False, **kwargs: Any) -> BlockDiffusionLM:
        """Load a model saved by :meth:`save_pretrained`. Never runs remote code unless asked.
        Its ``checksums.sha256`` manifest, when there is one, is verified first
        (:func:`~blockdistill.utils.checksum.verify_model_dir`)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

        verify_model_dir(path)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        auto = AutoModelForImageTextToText if hasattr(config, "vision_config") else AutoModelForCausalLM
        model = auto.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
        return cls.from_model(model, attn_backend=attn_backend)

    def save_pretrained(self, path: str | os.PathLike, tokenizer: Any = None, *, lora: str = "merged",
                        **kwargs: Any) -> None:
        """Atomically save weights (safetensors), config with block rules, and optionally the tokenizer.

        A model with LoRA adapters (:mod:`blockdistill.models.lora`) is saved ``lora="merged"``
        (default): the adapters are folded into the weights first, in place (the model is plain
        afterwards, what the samplers load); or ``lora="adapter"``: the adapter alone, the model
        keeps it."""
        from blockdistill.models import lora as _lora

        if lora not in ("merged", "adapter"):
            raise ValueError(f"lora must be 'merged' or 'adapter', got {lora!r}")
        if _lora.is_lora(self):
            if lora == "adapter":
                _lora.save_adapter(self, path, tokenizer=tokenizer)
                return
            _lora.merge_lora(self)
        elif lora == "adapter":
            raise ValueError("lora='adapter': this model carries no LoRA adapters")
        self.model.config.__dict__[CONFIG_KEY] = asdict(self.spec)
        atomic_save_pretrained(self.model, path, tokenizer=tokenizer, **kwargs)

    def set_attn_backend(self, backend: str) -> None:
        """Use ``backend``; where the family's HF class refuses it, the one the family picks
        (:meth:`BackboneFamily.attn_implementation`: Gemma-2 asked for ``sdpa`` runs ``eager``)."""
        backend = self.family.attn_implementation(self.model, backend)
        impl = hf_attn_implementation(backend)
        self.model.set_attn_implementation(impl) if hasattr(self.model, "set_attn_implementation") else None
        self.attn_backend = backend

    # ------------------------------------------------------------------ properties
    @property
    def block_size(self) -> int:
        return self.spec.block_size

    @property
    def device(self) -> torch.device:
        return next(self.family.input_embeddings(self.model).parameters()).device

    @property
    def max_context(self) -> int | None:
        return getattr(self.family.text_config(self.model), "max_position_embeddings", None)

    def mask_embedding(self) -> Tensor:
        """``(D,)`` input embedding of the mask token (through the embedding module, so a
        wrapped embedding, e.g. LoRA's trainable ``[MASK]`` row, is honoured)."""
        emb = self.family.input_embeddings(self.model)
        return emb(torch.tensor([self.spec.mask_token_id], device=next(emb.parameters()).device))[0]

    def check_length(self, n: int) -> None:
        """Raise when a clean stream of ``n`` tokens does not fit the backbone's context."""
        ctx = self.max_context
        if ctx is not None and n > ctx:
            raise ValueError(f"sequence has {n} tokens (prompt + response + block padding) "
                             f"but the backbone's context is {ctx}")

    # ------------------------------------------------------------------ core forward
    def embed(self, input_ids: Tensor, vision: VisionInputs | None = None) -> Tensor:
        """``(B, n)`` -> ``(B, n, D)`` input embeddings, vision features included."""
        return self.family.embed(self.model, input_ids, vision)

    def positions(self, input_ids: Tensor, valid: Tensor, vision: VisionInputs | None = None) -> tuple[Tensor, Tensor]:
        """Clean-stream position ids ``(B, n)`` or ``(3, B, n)`` and per-row offsets ``(B, 1)``."""
        return self.family.positions(self.model, input_ids, valid, vision)

    def run(self, inputs_embeds: Tensor, position_ids: Tensor, layout: SlotLayout, *,
            num_queries: int | None = None, cache: Any = None, attn_mask: Any = None) -> Tensor:
        """Run the decoder on the last ``num_queries`` slots of ``layout`` (earlier slots are in
        ``cache``). Returns hidden states ``(B, Q, D)``. ``attn_mask`` may be passed pre-rendered
        (samplers cache it per shape); otherwise it is rendered from ``layout``."""
        return run_backbone(self.model, self.family, self.attn_backend, inputs_embeds, position_ids, layout,
                            num_queries=num_queries, cache=cache, attn_mask=attn_mask, windows=self.windows)

    def render_mask(self, layout: SlotLayout, dtype: torch.dtype, num_queries: int | None = None) -> Any:
        """``layout``'s mask in this model's backend, each layer type's window applied (what the
        samplers pre-render and pass as ``run(attn_mask=)``)."""
        return render_mask(layout, self.attn_backend, dtype, num_queries, self.windows)

    def new_cache(self) -> Any:
        """An empty KV cache that keeps every key of every layer: HF's ``DynamicCache(config=)``
        would make sliding-window layers drop keys older than the window, but which cached keys
        a query sees is the block mask's decision (windows included), and cache slots must stay
        aligned with the samplers' slot descriptors."""
        from transformers import DynamicCache

        return DynamicCache()

    def logits(self, hidden: Tensor) -> Tensor:
        """LM head on ``(..., D)`` hidden states -> ``(..., V)`` float logits, with every transform
        the family's own forward applies after the head (soft-capping, logit scaling)."""
        return self.family.head_logits(self.model, hidden).float()

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.diffusion_logits(*args, **kwargs)

    # ------------------------------------------------------------------ training views
    def diffusion_logits(self, input_ids: Tensor, prompt_lens: Tensor, seq_lens: Tensor, masked: Tensor,
                         targets: Tensor, vision: VisionInputs | None = None, layout: str = "rad") -> Tensor:
        """Logits predicting the clean tokens at ``targets`` from the noisy copy.

        Args:
            input_ids: ``(B, n)`` clean streams (prompt + response + EOS padding), right-padded.
            prompt_lens, seq_lens: ``(B,)`` prompt length P and clean length n per row.
            masked: bool ``(B, n)``: clean indices replaced by the mask token in the noisy copy.
            targets: long ``(B, K)`` clean indices whose logits are wanted (response indices).
            layout: a name of :data:`~blockdistill.layout.TRAINING_LAYOUTS`: ``"rad"`` (noisy copy from
                ``s``), ``"full_dup"`` (noisy copy of everything), or one registered there.
        Returns:
            float ``(B, K, V)``. Only these K rows go through the LM head.
        """
        b, n = input_ids.shape
        size = self.spec.block_size
        lay = training_layout(layout, prompt_lens, seq_lens, size, width=n)
        valid = padding_mask(seq_lens, n)
        clean = self.embed(input_ids, vision)
        pos_clean, _ = self.positions(input_ids, valid, vision)
        hidden = self.run(torch.cat([clean, self.noisy_copy(clean, lay, masked)], 1), lay.positions(pos_clean), lay)
        return self.logits_at(hidden, lay, targets)

    def noisy_copy(self, clean: Tensor, layout: SlotLayout, masked: Tensor, input_ids: Tensor | None = None,
                   shown: Tensor | None = None) -> Tensor:
        """Input embeddings ``(B, T - n, D)`` of ``layout``'s noisy slots: the mask embedding at
        ``masked`` clean indices, else the clean embedding (``clean``, ``(B, n, D)``, image features
        included). ``shown`` ``(B, n)`` replaces it by a token's embedding wherever it differs from
        ``input_ids`` (a partly decoded block over a different clean context)."""
        n = clean.shape[1]
        nidx, valid = layout.clean_index[:, n:], layout.valid[:, n:]
        noisy = clean.gather(1, nidx[..., None].expand(-1, -1, clean.shape[-1]))
        if shown is not None:
            if input_ids is None:
                raise ValueError("noisy_copy: shown tokens need the clean input_ids to compare with")
            ids = shown.gather(1, nidx)
            own = (ids != input_ids.gather(1, nidx)) & valid
            if bool(own.any()):
                noisy = torch.where(own[..., None], self.family.input_embeddings(self.model)(ids).to(noisy.dtype), noisy)
        return torch.where((masked.gather(1, nidx) & valid)[..., None], self.mask_embedding().to(noisy.dtype), noisy)

    def logits_at(self, hidden: Tensor, layout: SlotLayout, targets: Tensor) -> Tensor:
        """Logits ``(B, K, V)`` predicting clean indices ``targets`` from ``layout``'s hidden states
        (``(B, T, D)``; the slot rule, shift included, is :meth:`SlotLayout.prediction_slot`).
        Only these K rows go through the LM head."""
        slots = layout.prediction_slot(targets, self.spec.shift)
        return self.logits(hidden.gather(1, slots[..., None].expand(-1, -1, hidden.shape[-1])))

    def clean_logits(self, input_ids: Tensor, seq_lens: Tensor, vision: VisionInputs | None = None,
                     keep: Tensor | None = None, block_size: int | None = None) -> Tensor:
        """Logits of the clean stream under block-causal attention (``block_size=1``: causal).

        ``keep`` ``(B, K)`` selects clean indices to run through the LM head (all when None).
        """
        b, n = input_ids.shape
        lay = clean_layout(seq_lens, block_size or self.spec.block_size, width=n)
        emb = self.embed(input_ids, vision)
        pos, _ = self.positions(input_ids, lay.valid, vision)
        hidden = self.run(emb, lay.positions(pos), lay)
        if keep is not None:
            hidden = hidden.gather(1, keep[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.logits(hidden)


def run_backbone(model: nn.Module, family: BackboneFamily, backend: str, inputs_embeds: Tensor,
                 position_ids: Tensor, layout: SlotLayout, *, num_queries: int | None = None,
                 cache: Any = None, attn_mask: Any = None, windows: Windows | None = None) -> Tensor:
    """Hidden states ``(B, Q, D)`` of ``model``'s decoder on the last ``num_queries`` slots of ``layout``
    (the mask rendered with each layer type's sliding window; ``windows`` None: read from ``model``)."""
    check_backend(backend, inputs_embeds.device, training=model.training and torch.is_grad_enabled())
    if attn_mask is None:
        windows = check_windows(model, family.decoder(model)) if windows is None else windows
        attn_mask = render_mask(layout, backend, inputs_embeds.dtype, num_queries, windows)
    aux_weight = family.router_aux_weight(model) if model.training and cache is None and layout is not None else 0.0
    extra = {"output_router_logits": True} if aux_weight else {}
    out = family.decoder(model)(
        inputs_embeds=inputs_embeds, position_ids=position_ids, attention_mask=attn_mask,
        cache=cache, use_cache=cache is not None, **extra,
    )
    if aux_weight:
        model.__dict__[ROUTER_AUX] = aux_weight * family.router_aux_loss(model, out.router_logits, layout.valid)
    return out.last_hidden_state


def causal_logits(model: nn.Module, input_ids: Tensor, seq_lens: Tensor, keep: Tensor,
                  vision: VisionInputs | None = None, attn_backend: str = "sdpa") -> Tensor:
    """Ordinary causal-LM logits ``(B, K, V)`` of a plain (AR) backbone at clean indices ``keep``.

    Causal attention is the clean block-causal rule at block size 1, so stage 1 shares the same
    code path (and the same mask definition) as every later stage.
    """
    family = family_for(model)
    attn_backend = family.attn_implementation(model, attn_backend)
    n = input_ids.shape[1]
    lay = clean_layout(seq_lens, 1, width=n)
    emb = family.embed(model, input_ids, vision)
    pos, _ = family.positions(model, input_ids, lay.valid, vision)
    hidden = run_backbone(model, family, attn_backend, emb, lay.positions(pos), lay)
    hidden = hidden.gather(1, keep[..., None].expand(-1, -1, hidden.shape[-1]))
    return family.head_logits(model, hidden).float()


def atomic_save_pretrained(model: nn.Module | None, path: str | os.PathLike, tokenizer: Any = None,
                           **kwargs: Any) -> None:
    """``save_pretrained`` (of the model and/or tokenizer) into a temporary directory, write its
    ``checksums.sha256`` manifest (sha256 of every file, checked by the loaders), then rename over
    ``path``: a crash never leaves a half-written model behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if model is not None:
            model.save_pretrained(tmp, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_dir_manifest(tmp)
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

