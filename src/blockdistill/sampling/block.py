"""Block-diffusion decoding (DESIGN.md §3): multi-step (the teacher), one step per block (the
student), with any registered cache mode (:mod:`blockdistill.sampling.cache`: no cache, a block
KV cache, or the fused block KV cache).

Example::

    den = HFDenoiser(BlockDiffusionLM.from_pretrained("runs/echo"))
    out = block_generate(den, prompt_ids, prompt_lens, policy=OneStep(), cache="fused",
                         max_new_tokens=128)
    out.sequences[0], out.stats.tpf

All rows move through blocks in lockstep: a row whose block is full before the others' simply
commits nothing more until the batch moves on, and a row that finishes (EOS in its block, or
``max_new_tokens`` reached) leaves the batch. Each row's decisions depend on its own context
only, so a batched call returns what each row returns alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from blockdistill.layout import (
    block_indices,
    block_span,
    generated_through,
    num_blocks,
    readout_column,
    response_block_start,
    tail_len,
)
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.cache import CACHE_MODES, CacheStrategy, CleanSlots, cache_strategy
from blockdistill.sampling.checks import check_vision_inputs
from blockdistill.sampling.common import check_prompts, device_sync, finish_sequence
from blockdistill.sampling.denoiser import Denoiser
from blockdistill.sampling.output import GenerationOutput, GenerationStats
from blockdistill.sampling.policies import ConfidenceThreshold, UnmaskPolicy
from blockdistill.sampling.proposal import GREEDY, Proposal
from blockdistill.sampling.trace import TraceRecorder, TraceSpec

__all__ = ["CACHE_MODES", "DecodeRun", "block_generate", "check_prompts"]


@dataclass
class _Rows:
    """Per-row bookkeeping of the rows still decoding (all tensors share the row order)."""

    origin: Tensor
    """Long ``(B,)``: input row of each active row."""
    start: Tensor
    """Long ``(B,)``: ``s_b``, first clean index of the first response block."""
    tail: Tensor
    """Long ``(B,)``: ``P_b - s_b``, prompt tokens inside the first block."""
    buf: Tensor
    """Long ``(B, N * L)``: every decoded block, from clean index ``s_b``."""

    def select(self, keep: Tensor) -> _Rows:
        return _Rows(self.origin[keep], self.start[keep], self.tail[keep], self.buf[keep])

    @property
    def count(self) -> int:
        return int(self.origin.shape[0])


@torch.no_grad()
def block_generate(
    denoiser: Denoiser,
    prompt_ids: Tensor,
    prompt_lens: Tensor,
    vision: VisionInputs | None = None,
    *,
    policy: UnmaskPolicy | None = None,
    cache: str = "fused",
    max_new_tokens: int = 128,
    stop_at_eos: bool = True,
    record: TraceSpec | None = None,
    proposal: Proposal | None = None,
) -> GenerationOutput:
    """Decode block by block.

    Args:
        denoiser: the model, e.g. :class:`~blockdistill.sampling.hf.HFDenoiser`.
        prompt_ids: long ``(B, P)``, right-padded; row ``b`` is its first ``prompt_lens[b]`` ids.
        prompt_lens: long ``(B,)``, each in ``[1, P]``.
        vision: vision inputs of the prompts (prefilled once).
        policy: unmasking policy; default :class:`ConfidenceThreshold` ``(0.85)``.
        cache: one of :data:`CACHE_MODES`.
        max_new_tokens: generated tokens per row at most (``>= 1``); whole blocks are decoded
            and the output truncated, so it is a prefix of a longer run's output.
        stop_at_eos: end a row after the block holding its first generated EOS, and cut its
            output after that EOS. False forces ``max_new_tokens`` tokens (benchmarks).
        record: record DCD trajectories (:class:`TraceSpec`); None records nothing.
        proposal: what a step proposes at each slot (:mod:`blockdistill.sampling.proposal`):
            :data:`~blockdistill.sampling.proposal.GREEDY` (default) or a
            :class:`~blockdistill.sampling.proposal.Sampled` rule.
    Returns:
        :class:`GenerationOutput` with one long ``(n_b,)`` tensor per row (EOS included when
        produced), statistics, and traces when ``record`` is set.
    """
    strategy = cache_strategy(cache)
    check_prompts(prompt_ids, prompt_lens, max_new_tokens, denoiser.spec.block_size, denoiser.max_context)
    check_vision_inputs(denoiser, prompt_ids, prompt_lens, vision)
    run = DecodeRun(denoiser, policy if policy is not None else ConfidenceThreshold(), strategy,
                    max_new_tokens, stop_at_eos, record, proposal or GREEDY)
    return run(prompt_ids, prompt_lens.to(prompt_ids.device), vision)


class DecodeRun:
    """One :func:`block_generate` call: the per-block loop, and what a
    :class:`~blockdistill.sampling.cache.CacheStrategy` may use.

    Rows move through blocks in lockstep; ``rows``, the denoiser ``state`` and ``carry`` always
    hold the same active rows. A forward's query is ``[clean slots (nc) | noisy block (L)]``
    (the clean slots come from the strategy); block position ``j`` is read at query column
    :func:`~blockdistill.layout.readout_column` ``(j, nc, shift)``. With shift, column ``-1``
    is ``carry``: the logits of the last clean token before the block (from the prefill, a
    strategy's write pass, or a forward that carried clean slots at the block's first step).

    For strategies: ``L``, ``shift``, ``state``, :meth:`forward`, :meth:`restart`,
    :meth:`block_tokens`, :meth:`block_index`, :meth:`set_carry`.
    """

    def __init__(self, denoiser: Denoiser, policy: UnmaskPolicy, strategy: CacheStrategy, max_new_tokens: int,
                 stop_at_eos: bool, record: TraceSpec | None, proposal: Proposal = GREEDY) -> None:
        self.den, self.policy, self.strategy, self.proposal = denoiser, policy, strategy, proposal
        self.max_new, self.stop_at_eos, self.record = max_new_tokens, stop_at_eos, record
        self.spec = spec = denoiser.spec
        self.L, self.mask_id, self.shift = spec.block_size, spec.mask_token_id, spec.shift
        # With shift, slot i-1 predicts token i: with L == 1 the block's own noisy slot is useless.
        self.need_noisy = not (self.shift and self.L == 1)
        self.nfe = self.nfe_decode = self.row_forwards = 0

    def __call__(self, prompt_ids: Tensor, prompt_lens: Tensor, vision: VisionInputs | None) -> GenerationOutput:
        L, dev = self.L, prompt_ids.device
        sync = device_sync(dev)
        t0 = time.perf_counter()
        self.prompt = (prompt_ids, prompt_lens, vision)
        self.b0 = b0 = prompt_ids.shape[0]
        start = response_block_start(prompt_lens, L)
        tail = tail_len(prompt_lens, L)
        n_blocks = num_blocks(int(tail.max()) + self.max_new, L)
        self.rows = _Rows(torch.arange(b0, device=dev), start, tail,
                          torch.full((b0, n_blocks * L), self.spec.pad_token_id, dtype=torch.long, device=dev))
        self.ar_L = torch.arange(L, device=dev)
        self.tail_ids = prompt_ids.gather(1, block_indices(start, 0, L).clamp(max=prompt_ids.shape[1] - 1))
        self.min_tail = int(tail.min())

        self.state, self.carry = self.den.prefill(prompt_ids, prompt_lens, vision)
        self.nfe += int(int(start.max()) > 0)
        sync()
        prefill_s = time.perf_counter() - t0

        self.recorder = TraceRecorder(self.record, b0, L) if self.record is not None else None
        self.results: dict[int, Tensor] = {}
        self.decoded: dict[int, Tensor] = {}
        for k in range(n_blocks):
            x = self._decode_block(k)
            if not self._end_block(k, x):
                break

        sync()
        wall = time.perf_counter() - t0
        seqs = [self.results[r] for r in range(b0)]
        traces = None
        if self.recorder is not None:
            traces = self.recorder.traces(prompt_lens.tolist(), [self.decoded[r] for r in range(b0)])
        lengths = [int(s.shape[0]) for s in seqs]
        stats = GenerationStats(nfe=self.nfe, nfe_decode=self.nfe_decode, row_forwards=self.row_forwards,
                                generated_tokens=sum(lengths), lengths=lengths, wall_s=wall, prefill_s=prefill_s)
        return GenerationOutput(seqs, stats, traces)

    # ------------------------------------------------------------------ one block
    def _decode_block(self, k: int) -> Tensor:
        """Denoise block ``k`` of every active row; returns its tokens, long ``(B, L)``."""
        L, b, ar_L = self.L, self.rows.count, self.ar_L
        if k == 0:
            masked = ar_L[None, :] >= self.rows.tail[:, None]
            x = torch.where(masked, self.mask_id, self.tail_ids)
        else:
            masked = torch.ones(b, L, dtype=torch.bool, device=ar_L.device)
            x = torch.full((b, L), self.mask_id, dtype=torch.long, device=ar_L.device)
        if self.recorder is not None:
            self.recorder.begin_block(b, ar_L.device)
        step = 0
        while True:
            step += 1
            if step == 1:
                kmax = L - (self.min_tail if k == 0 else 0)
            elif self.policy.commits_all:
                break
            else:
                kmax = int(masked.sum(1).max())
                if kmax == 0:
                    break
            # Columns: the still-masked block positions of each row first, in order.
            if kmax == L:
                jpos = ar_L.expand(b, L)
                cand = masked.clone()  # `masked` is updated in place below
            else:
                jpos = torch.sort((~masked).to(torch.int8), dim=1, stable=True).indices[:, :kmax]
                cand = masked.gather(1, jpos)
            clean = self.strategy.clean_slots(self, k, step)
            logits = self._logits(k, x, jpos, clean, whole=kmax == L)
            tok, conf = self.proposal(logits, self.mask_id, self.policy.needs_confidence, cand, self.rows.origin)
            commit = self.policy(conf, cand, step) & cand
            if self.recorder is not None:
                self.recorder.observe(logits, jpos, cand, commit, step)
            x.scatter_(1, jpos, torch.where(commit, tok, x.gather(1, jpos)))
            masked.scatter_(1, jpos, masked.gather(1, jpos) & ~commit)
        return x

    def _logits(self, k: int, x: Tensor, jpos: Tensor, clean: CleanSlots | None, whole: bool) -> Tensor:
        """Float ``(B, K, V)`` logits predicting block positions ``jpos`` ``(B, K)`` of block ``k``
        (``whole``: ``jpos`` is every position in order), the query carrying ``clean`` first."""
        idx_k = self.block_index(k)
        nc = 0 if clean is None else clean.ids.shape[1]
        if not self.need_noisy:
            ids, index = (None, None) if clean is None else (clean.ids, clean.index)
        elif nc:
            ids, index = torch.cat([clean.ids, x], 1), torch.cat([clean.index, idx_k], 1)
        else:
            ids, index = x, idx_k
        at = readout_column(jpos, nc, self.shift)
        if not self.shift or nc:
            logits = self.forward(ids, index, nc, at)
            if self.shift and whole and not self.policy.commits_all:
                self.carry = logits[:, 0].clone()  # position 0, read at the last clean slot
            return logits
        if ids is None:  # L == 1 without clean slots: the carried logits are the answer
            return self.carry[:, None, :].clone()
        # No clean slots: position 0 (column -1) comes from ``carry``. When every row asks for
        # it (jpos is sorted, so it is column 0), the LM head skips that column.
        first = jpos[:, 0] == 0
        if bool(first.all()):
            carried = self.carry[:, None, :]
            if jpos.shape[1] == 1:
                return carried.clone()
            return torch.cat([carried, self.forward(ids, index, 0, at[:, 1:])], 1)
        logits = self.forward(ids, index, 0, at.clamp(min=0))
        logits[:, 0] = torch.where(first[:, None], self.carry, logits[:, 0])
        return logits

    def _end_block(self, k: int, x: Tensor) -> bool:
        """Store block ``k``, retire finished rows, hand the block to the strategy. Returns
        False when no row is left."""
        rows = self.rows
        lo, hi = block_span(0, k, self.L)  # block k in the row buffers
        rows.buf[:, lo:hi] = x
        if self.recorder is not None:
            self.recorder.end_block()
        done = generated_through(k, rows.tail, self.L) >= self.max_new
        if self.stop_at_eos:
            generated = self.ar_L[None, :] >= (rows.tail[:, None] if k == 0 else 0)
            done = done | (self.spec.is_eos(x) & generated).any(1)
        if bool(done.any()):
            is_eos = self.spec.is_eos if self.stop_at_eos else None
            for a in done.nonzero()[:, 0].tolist():
                r = int(rows.origin[a])
                self.decoded[r] = rows.buf[a, :hi]
                self.results[r] = finish_sequence(rows.buf[a, int(rows.tail[a]):hi], self.max_new, is_eos)
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                return False
            if self.recorder is not None:
                self.recorder.select(keep.tolist())
            self.rows = rows.select(keep)
            self.state = self.den.select_rows(self.state, keep)
            x = x[keep]
            self.carry = None if self.carry is None else self.carry[keep]
        self.strategy.end_block(self, k, x)
        return True

    # ------------------------------------------------------------------ for strategies
    def forward(self, ids: Tensor, index: Tensor, append: int, at: Tensor | None) -> Any:
        """One counted denoiser forward on the active rows (:meth:`Denoiser.forward`)."""
        self.nfe += 1
        self.nfe_decode += 1
        self.row_forwards += ids.shape[0]
        return self.den.forward(self.state, ids, index, append, at)

    def restart(self) -> None:
        """Drop the context: prefill the prompts again (counted) and keep the active rows."""
        self.state, self.carry = self.den.prefill(*self.prompt)
        self.nfe += 1
        if self.rows.count < self.b0:
            self.state = self.den.select_rows(self.state, self.rows.origin)
            self.carry = None if self.carry is None else self.carry[self.rows.origin]

    def set_carry(self, logits: Tensor) -> None:
        """Float ``(B, V)``: logits of the last clean token before the next block (shift)."""
        self.carry = logits

    def block_tokens(self, k: int, count: int = 1) -> Tensor:
        """Long ``(B, count * L)``: decoded blocks ``k .. k + count - 1`` of the active rows."""
        lo, hi = block_span(0, k, self.L, count)
        return self.rows.buf[:, lo:hi]

    def block_index(self, k: int, count: int = 1) -> Tensor:
        """Long ``(B, count * L)``: clean indices of blocks ``k .. k + count - 1``."""
        return block_indices(self.rows.start, k, self.L, count)
