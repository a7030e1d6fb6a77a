"""Decoding: AR baseline, multi-step and one-step block samplers, fused block KV cache.

Samplers work on token ids only (no tokenizer) and drive models through the
:class:`~blockdistill.sampling.denoiser.Denoiser` protocol; :class:`HFDenoiser` implements it
for any :class:`~blockdistill.models.adapter.BlockDiffusionLM`.

Example::

    from blockdistill.sampling import HFDenoiser, OneStep, block_generate

    out = block_generate(HFDenoiser(bd), prompt_ids, prompt_lens, policy=OneStep(), cache="fused")
"""

from blockdistill.sampling.ar import ar_generate
from blockdistill.sampling.block import DecodeRun, block_generate
from blockdistill.sampling.cache import (
    CACHE_MODES,
    BlockCache,
    CacheStrategy,
    CleanSlots,
    FusedCache,
    NoCache,
    cache_strategy,
    register_cache_mode,
)
from blockdistill.sampling.common import check_prompts, device_sync, finish_sequence
from blockdistill.sampling.denoiser import Denoiser
from blockdistill.sampling.generate import GenerateOutput, generate
from blockdistill.sampling.hf import HFDenoiser, HFState
from blockdistill.sampling.output import GenerationOutput, GenerationStats, pad_sequences
from blockdistill.sampling.policies import (
    POLICIES,
    ConfidenceThreshold,
    FixedCount,
    OneStep,
    UnmaskPolicy,
    policy_from_name,
)
from blockdistill.sampling.proposal import GREEDY, Greedy, Proposal, Sampled
from blockdistill.sampling.trace import BlockTrace, TraceSpec

__all__ = [
    "CACHE_MODES",
    "GREEDY",
    "POLICIES",
    "BlockCache",
    "BlockTrace",
    "CacheStrategy",
    "CleanSlots",
    "ConfidenceThreshold",
    "DecodeRun",
    "Denoiser",
    "FixedCount",
    "FusedCache",
    "Greedy",
    "GenerateOutput",
    "GenerationOutput",
    "GenerationStats",
    "HFDenoiser",
    "HFState",
    "NoCache",
    "OneStep",
    "Proposal",
    "Sampled",
    "TraceSpec",
    "UnmaskPolicy",
    "ar_generate",
    "block_generate",
    "cache_strategy",
    "generate",
    "check_prompts",
    "device_sync",
    "finish_sequence",
    "pad_sequences",
    "policy_from_name",
    "register_cache_mode",
]
