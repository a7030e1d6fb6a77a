"""The ``Denoiser`` protocol: the one interface block samplers drive.

A sampler never touches a backbone directly. It talks to a :class:`Denoiser`, which owns the
visible context (for a transformer: a KV cache of finished clean blocks) and answers "what are
the logits at these query slots, given the context and these query tokens?". A toy model with
an explicit joint distribution (``blockdistill.testing``) implements the same protocol, so the
samplers are tested against exact probabilities as well as against real backbones.

Query conventions (DESIGN.md §2, §3):

- a forward's query holds ``Q`` slots per row; the first ``append`` of them are *clean*
  finished tokens (whole blocks, written to the context by this call), the remaining
  ``Q - append`` are *noisy* slots of the block being denoised (they see the context, the
  appended clean slots only if those belong to strictly earlier blocks, and each other; they
  are never kept);
- every slot carries its clean-stream index; blocks are ``index // L``; every query slot is a
  real token (no batch padding in queries);
- the sampler always appends whole blocks, in clean order, right after the context (one block
  per call when decoding with a cache; the no-cache reference sends every finished block to a
  fresh prefilled state).

Shapes: ``B`` rows, ``Q`` query slots, ``K`` logit rows asked for, ``V`` vocabulary (mask token
included: the sampler excludes it from the argmax).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from blockdistill.models.adapter import BlockSpec
from blockdistill.models.families import VisionInputs

__all__ = ["Denoiser"]


@runtime_checkable
class Denoiser(Protocol):
    """What a block sampler needs from a model. The state object is opaque to the sampler."""

    spec: BlockSpec
    """Block size, mask/EOS/pad ids and ``shift`` (logits at slot ``i-1`` predict token ``i``)."""

    @property
    def max_context(self) -> int | None:
        """Longest clean stream the model can take (None: unbounded)."""
        ...

    def prefill(self, prompt_ids: Tensor, prompt_lens: Tensor,
                vision: VisionInputs | None = None) -> tuple[Any, Tensor | None]:
        """Start a context from right-padded prompts.

        Args:
            prompt_ids: long ``(B, P)``, row ``b`` valid on its first ``prompt_lens[b]`` tokens.
            prompt_lens: long ``(B,)``, each ``>= 1``.
            vision: optional vision inputs of the prompts.
        Returns:
            ``(state, last_logits)``. ``state`` holds the clean indices ``[0, s_b)`` of every row
            (``s_b = (P_b // L) * L``: the whole blocks before the first response block); the
            prompt tail ``[s_b, P_b)`` is *not* in it: the sampler sends it as the first tokens
            of the first block. ``last_logits`` is float ``(B, V)``, the logits at clean index
            ``s_b - 1`` (what predicts token ``s_b`` when ``spec.shift``), returned only when
            ``spec.shift`` (else None); rows with ``s_b == 0`` get unspecified values.
        """
        ...

    def forward(self, state: Any, query_ids: Tensor, query_index: Tensor, append: int,
                logits_at: Tensor | None) -> Tensor | None:
        """Run one forward over the query slots.

        Args:
            state: from :meth:`prefill` (updated in place).
            query_ids: long ``(B, Q)`` tokens (the mask id on still-masked noisy slots).
            query_index: long ``(B, Q)`` clean-stream index of each slot.
            append: number of leading clean slots (0 or whole blocks) to add to the context.
            logits_at: long ``(B, K)`` query-slot offsets (``0..Q-1``) whose logits are wanted,
                or None for none (a pass that only writes the context).
        Returns:
            float ``(B, K, V)`` logits at ``logits_at`` (None when ``logits_at`` is None).
            Afterwards the state's context also holds the ``append`` clean slots; the noisy
            slots leave no trace.
        """
        ...

    def select_rows(self, state: Any, rows: Tensor) -> Any:
        """Keep only rows ``rows`` (long ``(B',)``, increasing) of ``state``, e.g. to drop
        finished sequences. Returns the (possibly new) state."""
        ...
