"""Decoding: AR baseline, multi-step and one-step block samplers, fused block KV cache.

Samplers work on token ids only (no tokenizer) and drive models through the
:class:`~blockdistill.sampling.denoiser.Denoiser` protocol.
"""

from blockdistill.sampling.denoiser import Denoiser

__all__ = ["Denoiser"]
