"""Cache modes of the block sampler: one small strategy class per mode, behind one protocol.

:func:`~blockdistill.sampling.block.block_generate` decodes block after block; every forward's
query is ``[clean slots (nc) | the L noisy slots of the block]`` and the clean slots, all
appended to the context by that forward, end right before the block. A strategy decides only
two things, and the per-block loop never asks which mode it runs:

- :meth:`CacheStrategy.clean_slots`: the clean tokens the forward of step ``step`` of block
  ``k`` carries (None: none, the context already holds every finished block);
- :meth:`CacheStrategy.end_block`: what happens when block ``k`` is final (write it to the
  context now, keep it for the next forward, or nothing).

The loop does everything else the same way for every mode: which block positions to read, the
shift read-out (:func:`blockdistill.layout.readout_column`: with ``shift`` position 0 is read
at the last clean slot, or from the logits carried from the last clean token when the query
has no clean slot), the policy, retiring finished rows, traces and forward counts.

Registered modes (:data:`CACHE_MODES`, name -> class; configs and samplers validate against it):

- ``none``: every forward recomputes the whole context (the reference);
- ``block``: finished blocks live in a KV cache, written by one extra pass per block;
- ``fused``: that write happens in the first denoising pass of the next block.

Adding a mode is one class plus registration; ``tests/sampling/test_block_equivalence.py``
checks every registered mode against ``none`` (tokens, with and without shift, every policy).
For example, a block cache that writes each finished block lazily, in its own pass right
before the next block's first forward (the test suite registers it to check exactly this)::

    @register_cache_mode
    class DeferredWrite(CacheStrategy):
        name = "deferred"

        def __init__(self):
            self.pending = None

        def clean_slots(self, run, k, step):
            if self.pending is not None:
                BlockCache().end_block(run, k - 1, self.pending)
                self.pending = None
            return None

        def end_block(self, run, k, block):
            self.pending = block
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor

from blockdistill.layout import readout_column

if TYPE_CHECKING:
    from blockdistill.sampling.block import DecodeRun

__all__ = ["CACHE_MODES", "BlockCache", "CacheStrategy", "CleanSlots", "FusedCache", "NoCache",
           "cache_strategy", "register_cache_mode"]


@dataclass(frozen=True)
class CleanSlots:
    """Clean tokens a forward carries in front of the noisy block; the forward appends all of
    them to the context. They are whole finished blocks in clean order, the last one right
    before the block being denoised."""

    ids: Tensor
    """Long ``(B, nc)``."""
    index: Tensor
    """Long ``(B, nc)``: their clean-stream indices."""


class CacheStrategy:
    """How finished blocks reach the context. One instance per :func:`block_generate` call, so
    a strategy may keep state between calls of its two methods (rows leave the batch only
    between :meth:`end_block` of one block and the first forward of the next, so state kept
    from :meth:`end_block` already has the right rows).

    ``run`` is the :class:`~blockdistill.sampling.block.DecodeRun` of the call: its active
    rows, the denoiser state, and the helpers a mode needs (``forward``, ``restart``,
    ``block_tokens``, ``block_index``, ``set_carry``).
    """

    name: ClassVar[str]
    """Registry key (the ``cache=`` argument)."""

    def clean_slots(self, run: DecodeRun, k: int, step: int) -> CleanSlots | None:
        """Clean slots of the forward of step ``step`` (1-based) of block ``k``; may first reset
        the context (``run.restart()``). None: the context holds blocks ``0..k-1`` already."""
        return None

    def end_block(self, run: DecodeRun, k: int, block: Tensor) -> None:
        """Block ``k`` is final: ``block`` long ``(B, L)`` for the rows still decoding (finished
        rows are gone). The context must hold it, or the next forward must carry it, before
        block ``k + 1`` is denoised; a mode that writes it here with shift must also hand the
        logits of its last token to ``run.set_carry`` (they predict the next block's position 0)."""


CACHE_MODES: dict[str, type[CacheStrategy]] = {}
"""Name -> strategy class of every cache mode (``none``, ``block``, ``fused``, and any
registered later)."""


def register_cache_mode(cls: type[CacheStrategy]) -> type[CacheStrategy]:
    """Class decorator: add ``cls`` to :data:`CACHE_MODES` under ``cls.name``."""
    if cls.name in CACHE_MODES and CACHE_MODES[cls.name] is not cls:
        raise ValueError(f"cache mode {cls.name!r} is already registered by {CACHE_MODES[cls.name].__name__}")
    CACHE_MODES[cls.name] = cls
    return cls


def cache_strategy(name: str) -> CacheStrategy:
    """A fresh strategy for cache mode ``name``; ``ValueError`` naming the registered modes."""
    if name not in CACHE_MODES:
        raise ValueError(f"cache must be one of {tuple(CACHE_MODES)}, got {name!r}")
    return CACHE_MODES[name]()


@register_cache_mode
class NoCache(CacheStrategy):
    """The reference: every forward starts from a fresh prefill of the prompts and carries
    every finished block as clean slots (the state is dropped afterwards)."""

    name = "none"

    def clean_slots(self, run: DecodeRun, k: int, step: int) -> CleanSlots | None:
        if step > 1 or k > 0:  # the very first forward uses the call's own prefill
            run.restart()
        if k == 0:
            return None
        return CleanSlots(run.block_tokens(0, count=k), run.block_index(0, count=k))


@register_cache_mode
class BlockCache(CacheStrategy):
    """Block KV cache: denoising forwards carry no clean slot; one extra pass writes each
    finished block (and, with shift, reads the logits of its last token)."""

    name = "block"

    def end_block(self, run: DecodeRun, k: int, block: Tensor) -> None:
        L = run.L
        at = None
        if run.shift:  # the last clean slot predicts the next block's position 0
            at = block.new_full((block.shape[0], 1), readout_column(0, L, True))
        out = run.forward(block, run.block_index(k), L, at)
        if run.shift:
            run.set_carry(out[:, 0])


@register_cache_mode
class FusedCache(CacheStrategy):
    """Fused block KV cache: the first forward of block ``k`` carries block ``k - 1`` as clean
    slots, so writing it costs no extra pass."""

    name = "fused"

    def __init__(self) -> None:
        self.pending: Tensor | None = None
        """The last finished block, not yet in the context."""

    def clean_slots(self, run: DecodeRun, k: int, step: int) -> CleanSlots | None:
        if self.pending is None:
            return None
        ids, self.pending = self.pending, None
        return CleanSlots(ids, run.block_index(k - 1))

    def end_block(self, run: DecodeRun, k: int, block: Tensor) -> None:
        self.pending = block
