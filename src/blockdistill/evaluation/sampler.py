"""Sampler configurations and evaluation variants: which model decodes, and how.

A :class:`SamplerConfig` names one decoding recipe (AR baseline, or block decoding with an
unmasking policy and a cache mode); a :class:`Variant` pairs it with a model. The block size is
the model's own (``model.spec.block_size``): a variant at another block size carries another
model (or the same weights wrapped with another :class:`~blockdistill.models.adapter.BlockSpec`).

Example::

    teacher = Variant("base_multistep_L8", base_l8, SamplerConfig("block", "threshold", {"tau": 0.85}))
    student = Variant("echo_onestep_L8", echo_l8, SamplerConfig("block", "one_step"))
    out = student.generate(prompt_ids, prompt_lens, vision)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from blockdistill.models.adapter import BlockDiffusionLM
from blockdistill.models.families import VisionInputs
from blockdistill.sampling import (
    CACHE_MODES,
    GenerationOutput,
    HFDenoiser,
    UnmaskPolicy,
    ar_generate,
    block_generate,
    policy_from_name,
)

__all__ = ["SAMPLER_KINDS", "SamplerConfig", "Variant"]

SAMPLER_KINDS = ("ar", "block")


@dataclass(frozen=True)
class SamplerConfig:
    """How a variant decodes."""

    kind: str = "block"
    """``"ar"``: greedy AR with a KV cache (:func:`~blockdistill.sampling.ar_generate`), one token
    per forward; ``"block"``: block decoding (:func:`~blockdistill.sampling.block_generate`)."""
    policy: str | None = None
    """Block only: unmasking policy name for :func:`~blockdistill.sampling.policy_from_name`
    (``"threshold"``, ``"fixed"``, ``"one_step"``); None = ``"threshold"``. Must be None for AR."""
    policy_params: dict[str, float] = field(default_factory=dict)
    """Keyword arguments of the policy, e.g. ``{"tau": 0.85}`` or ``{"count": 2}``."""
    cache: str | None = None
    """Block only: ``"none"``, ``"block"`` or ``"fused"``; None = ``"fused"``. Must be None for AR
    (the AR sampler always uses its KV cache)."""
    max_new_tokens: int = 128
    """Generated tokens per row at most."""
    stop_at_eos: bool = True
    """End a row at its first EOS. False forces ``max_new_tokens`` tokens (speed benchmarks)."""

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler kind must be one of {SAMPLER_KINDS}, got {self.kind!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.kind == "ar":
            if self.policy is not None or self.policy_params or self.cache is not None:
                raise ValueError(
                    f"an 'ar' sampler takes no policy or cache (got policy={self.policy!r}, "
                    f"policy_params={self.policy_params!r}, cache={self.cache!r}); leave them unset")
            return
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {tuple(CACHE_MODES)}, got {self.cache!r}")
        self.build_policy()  # unknown names and bad parameters fail here, not mid-run

    @property
    def cache_mode(self) -> str | None:
        """The cache mode used (None for AR)."""
        return None if self.kind == "ar" else (self.cache or "fused")

    @property
    def policy_name(self) -> str | None:
        """The policy name used (None for AR)."""
        return None if self.kind == "ar" else (self.policy or "threshold")

    def build_policy(self) -> UnmaskPolicy | None:
        """The unmasking policy object (None for AR)."""
        if self.kind == "ar":
            return None
        return policy_from_name(self.policy_name, **self.policy_params)

    def describe(self) -> str:
        """Short label, e.g. ``"ar"``, ``"block/threshold(tau=0.85)/fused"``."""
        if self.kind == "ar":
            return "ar"
        params = ",".join(f"{k}={v}" for k, v in sorted(self.policy_params.items()))
        return f"block/{self.policy_name}{f'({params})' if params else ''}/{self.cache_mode}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "policy": self.policy_name, "policy_params": dict(self.policy_params),
                "cache": self.cache_mode, "max_new_tokens": self.max_new_tokens, "stop_at_eos": self.stop_at_eos}

    def generate(self, model: BlockDiffusionLM, prompt_ids: Tensor, prompt_lens: Tensor,
                 vision: VisionInputs | None = None) -> GenerationOutput:
        """Decode a batch.

        Args:
            model: the backbone with its block rules.
            prompt_ids: long ``(B, P)`` right-padded prompts; prompt_lens: long ``(B,)``.
            vision: vision inputs of the prompts, images in row order.
        Returns:
            the sampler's :class:`~blockdistill.sampling.GenerationOutput` (ids per row, stats).
        """
        if self.kind == "ar":
            return ar_generate(model, prompt_ids, prompt_lens, vision, max_new_tokens=self.max_new_tokens,
                               stop_at_eos=self.stop_at_eos)
        return block_generate(HFDenoiser(model), prompt_ids, prompt_lens, vision, policy=self.build_policy(),
                              cache=self.cache_mode, max_new_tokens=self.max_new_tokens,
                              stop_at_eos=self.stop_at_eos)


@dataclass
class Variant:
    """One row family of an evaluation table: a named model plus its sampler."""

    name: str
    """Label in tables and JSON (unique within an evaluation)."""
    model: BlockDiffusionLM
    """The model; its ``spec`` fixes block size, EOS and pad ids."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """How it decodes."""
    tokenizer: Any = None
    """Tokenizer that turns its ids into text; None = the evaluation's tokenizer."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("variant name must be a non-empty string")
        if not isinstance(self.model, BlockDiffusionLM):
            raise TypeError(f"variant {self.name!r}: model must be a BlockDiffusionLM, got {type(self.model).__name__} "
                            "(wrap an AR model with BlockDiffusionLM.from_causal_lm)")

    @property
    def block_size(self) -> int | None:
        """The model's block size for block samplers; None for AR."""
        return None if self.sampler.kind == "ar" else self.model.spec.block_size

    def generate(self, prompt_ids: Tensor, prompt_lens: Tensor, vision: VisionInputs | None = None) -> GenerationOutput:
        """:meth:`SamplerConfig.generate` with this variant's model."""
        return self.sampler.generate(self.model, prompt_ids, prompt_lens, vision)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sampler": self.sampler.as_dict(), "block_size": self.block_size,
                "label": self.sampler.describe()}
