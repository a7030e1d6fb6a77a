"""Block-diffusion decoding (DESIGN.md §3): multi-step (the teacher), one step per block (the
student), with no cache, a block KV cache, or the fused block KV cache.

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

from blockdistill.layout import response_block_start
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.denoiser import Denoiser
from blockdistill.sampling.output import GenerationOutput, GenerationStats
from blockdistill.sampling.policies import ConfidenceThreshold, UnmaskPolicy, proposals
from blockdistill.sampling.trace import TraceRecorder, TraceSpec

__all__ = ["CACHE_MODES", "block_generate", "check_prompts"]

CACHE_MODES = ("none", "block", "fused")
"""``none``: every forward recomputes the whole context (the reference); ``block``: finished
blocks live in a KV cache, written by one extra pass per block; ``fused``: that write happens in
the first denoising pass of the next block."""


def check_prompts(prompt_ids: Tensor, prompt_lens: Tensor, max_new_tokens: int, block_size: int,
                  max_context: int | None) -> None:
    """Raise ``ValueError`` on inputs no sampler can decode, naming the bad value."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_ids.dim() != 2 or prompt_lens.shape != (prompt_ids.shape[0],):
        raise ValueError(f"prompt_ids must be (B, P) and prompt_lens (B,); got {tuple(prompt_ids.shape)} "
                         f"and {tuple(prompt_lens.shape)}")
    if prompt_ids.shape[0] == 0:
        raise ValueError("empty batch: prompt_ids has no rows")
    lo, hi = int(prompt_lens.min()), int(prompt_lens.max())
    if lo < 1 or hi > prompt_ids.shape[1]:
        raise ValueError(f"prompt_lens must be in [1, {prompt_ids.shape[1]}] (prompt_ids width), got {lo}..{hi}")
    if max_context is not None:
        if hi > max_context:
            raise ValueError(f"prompt has {hi} tokens but the backbone's context is {max_context}")
        start = response_block_start(prompt_lens, block_size)
        end = int((start + -(-(prompt_lens - start + max_new_tokens) // block_size) * block_size).max())
        if end > max_context:
            raise ValueError(
                f"prompt of {hi} tokens plus max_new_tokens={max_new_tokens} needs {end} positions "
                f"(whole blocks of {block_size}) but the backbone's context is {max_context}")


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
    Returns:
        :class:`GenerationOutput` with one long ``(n_b,)`` tensor per row (EOS included when
        produced), statistics, and traces when ``record`` is set.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    check_prompts(prompt_ids, prompt_lens, max_new_tokens, denoiser.spec.block_size, denoiser.max_context)
    run = _BlockDecoder(denoiser, policy if policy is not None else ConfidenceThreshold(), cache,
                        max_new_tokens, stop_at_eos, record)
    return run(prompt_ids, prompt_lens.to(prompt_ids.device), vision)


class _BlockDecoder:
    """One :func:`block_generate` call. Rows move through blocks in lockstep; ``rows``, the
    denoiser ``state``, ``carry`` and ``pending`` always hold the same active rows.

    Query of a forward: ``[clean slots (nc) | noisy block (L)]``.
    - ``block``: ``nc = 0`` while denoising; one extra pass writes each finished block.
    - ``fused``: the first pass of block k carries block k-1 as ``L`` clean slots (appended).
    - ``none``: a fresh prefill every forward, and every finished block as clean slots.
    With ``shift``, block position ``j`` is read at query slot ``nc + j - 1``; position 0 with
    ``nc = 0`` comes from ``carry``, the logits of the last clean token before the block
    (from prefill, the block write pass, or the fused pass of the block's first step).
    """

    def __init__(self, denoiser: Denoiser, policy: UnmaskPolicy, cache: str, max_new_tokens: int,
                 stop_at_eos: bool, record: TraceSpec | None) -> None:
        self.den, self.policy, self.cache = denoiser, policy, cache
        self.max_new, self.stop_at_eos, self.record = max_new_tokens, stop_at_eos, record
        spec = denoiser.spec
        self.L, self.mask_id, self.eos_id, self.shift = spec.block_size, spec.mask_token_id, spec.eos_token_id, spec.shift
        self.pad_id = spec.pad_token_id
        # With shift, slot i-1 predicts token i: with L == 1 the block's own noisy slot is useless.
        self.need_noisy = not (self.shift and self.L == 1)
        self.nfe = self.nfe_decode = self.row_forwards = 0

    def __call__(self, prompt_ids: Tensor, prompt_lens: Tensor, vision: VisionInputs | None) -> GenerationOutput:
        L, dev = self.L, prompt_ids.device
        sync = _syncer(dev)
        t0 = time.perf_counter()
        self.prompt = (prompt_ids, prompt_lens, vision)
        self.b0 = b0 = prompt_ids.shape[0]
        start = response_block_start(prompt_lens, L)
        tail = prompt_lens - start
        n_blocks = -(-(int(tail.max()) + self.max_new) // L)
        self.rows = _Rows(torch.arange(b0, device=dev), start, tail,
                          torch.full((b0, n_blocks * L), self.pad_id, dtype=torch.long, device=dev))
        self.ar_L = torch.arange(L, device=dev)
        self.tail_ids = prompt_ids.gather(1, (start[:, None] + self.ar_L).clamp(max=prompt_ids.shape[1] - 1))
        self.min_tail = int(tail.min())

        self.state, self.carry = self.den.prefill(prompt_ids, prompt_lens, vision)
        self.nfe += int(int(start.max()) > 0)
        self.pending: Tensor | None = None  # fused: the previous block, appended by the next forward
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
            logits = self._logits(k, step, x, jpos)
            tok, conf = proposals(logits, self.mask_id, self.policy.needs_confidence)
            commit = self.policy(conf, cand, step) & cand
            if self.recorder is not None:
                self.recorder.observe(logits, jpos, cand, commit, step)
            x.scatter_(1, jpos, torch.where(commit, tok, x.gather(1, jpos)))
            masked.scatter_(1, jpos, masked.gather(1, jpos) & ~commit)
        return x

    def _logits(self, k: int, step: int, x: Tensor, jpos: Tensor) -> Tensor:
        """Float ``(B, K, V)`` logits predicting block positions ``jpos`` ``(B, K)`` of block ``k``."""
        L, rows = self.L, self.rows
        idx_k = rows.start[:, None] + k * L + self.ar_L
        clean_ids = clean_idx = None
        append = 0
        if self.cache == "none":
            if step > 1 or k > 0:  # the reference recomputes everything, prompt included
                self._fresh_state()
            if k:
                clean_ids = rows.buf[:, : k * L]
                clean_idx = rows.start[:, None] + torch.arange(k * L, device=x.device)
                append = k * L  # the state is dropped after this forward
        elif self.cache == "fused" and self.pending is not None:
            clean_ids, clean_idx, append = self.pending, idx_k - L, L
            self.pending = None
        nc = 0 if clean_ids is None else clean_ids.shape[1]
        if not self.need_noisy:
            ids, index = clean_ids, clean_idx
        elif nc:
            ids, index = torch.cat([clean_ids, x], 1), torch.cat([clean_idx, idx_k], 1)
        else:
            ids, index = x, idx_k

        if not self.shift:
            return self._forward(ids, index, append, nc + jpos)
        if ids is None:  # L == 1 without clean slots: the carried logits are the answer
            return self.carry[:, None, :].clone()
        if nc:
            logits = self._forward(ids, index, append, nc - 1 + jpos)
            if self.cache == "fused" and not self.policy.commits_all:
                self.carry = logits[:, 0].clone()  # column 0 is position 0 at a block's first step
            return logits
        # No clean slots: position 0 is read from ``carry``, not from a slot. When every row asks
        # for it (jpos is sorted, so it is column 0), the LM head skips that column.
        first = jpos[:, 0] == 0
        if bool(first.all()):
            carried = self.carry[:, None, :]
            if jpos.shape[1] == 1:
                return carried.clone()
            return torch.cat([carried, self._forward(ids, index, append, jpos[:, 1:] - 1)], 1)
        logits = self._forward(ids, index, append, (jpos - 1).clamp(min=0))
        logits[:, 0] = torch.where(first[:, None], self.carry, logits[:, 0])
        return logits

    def _end_block(self, k: int, x: Tensor) -> bool:
        """Store block ``k``, retire finished rows, write the block's KV where the cache mode
        needs it. Returns False when no row is left."""
        L, rows = self.L, self.rows
        rows.buf[:, k * L:(k + 1) * L] = x
        if self.recorder is not None:
            self.recorder.end_block()
        done = (k + 1) * L - rows.tail >= self.max_new
        if self.stop_at_eos:
            generated = self.ar_L[None, :] >= (rows.tail[:, None] if k == 0 else 0)
            done = done | ((x == self.eos_id) & generated).any(1)
        if bool(done.any()):
            for a in done.nonzero()[:, 0].tolist():
                r = int(rows.origin[a])
                self.decoded[r] = rows.buf[a, : (k + 1) * L]
                self.results[r] = _finish(rows.buf[a], int(rows.tail[a]), (k + 1) * L, self.max_new,
                                          self.eos_id if self.stop_at_eos else None)
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                return False
            if self.recorder is not None:
                self.recorder.select(keep.tolist())
            self.rows = rows = rows.select(keep)
            self.state = self.den.select_rows(self.state, keep)
            x = x[keep]
            self.carry = None if self.carry is None else self.carry[keep]
        if self.cache == "block":
            at = torch.full((rows.count, 1), L - 1, dtype=torch.long, device=x.device) if self.shift else None
            out = self._forward(x, rows.start[:, None] + k * L + self.ar_L, L, at)
            if self.shift:
                self.carry = out[:, 0]
        elif self.cache == "fused":
            self.pending = x
        return True

    # ------------------------------------------------------------------ helpers
    def _forward(self, ids: Tensor, index: Tensor, append: int, at: Tensor | None) -> Any:
        self.nfe += 1
        self.nfe_decode += 1
        self.row_forwards += ids.shape[0]
        return self.den.forward(self.state, ids, index, append, at)

    def _fresh_state(self) -> None:
        """No-cache reference: prefill the prompts again and keep the active rows."""
        self.state, self.carry = self.den.prefill(*self.prompt)
        self.nfe += 1
        if self.rows.count < self.b0:
            self.state = self.den.select_rows(self.state, self.rows.origin)
            self.carry = None if self.carry is None else self.carry[self.rows.origin]


def _finish(buf: Tensor, tail: int, end: int, max_new_tokens: int, eos_id: int | None) -> Tensor:
    """A row's output: its generated tokens, cut at ``max_new_tokens`` and after the first EOS."""
    out = buf[tail:end][:max_new_tokens]
    if eos_id is not None:
        hit = (out == eos_id).nonzero()
        if hit.numel():
            out = out[: int(hit[0, 0]) + 1]
    return out.clone()


def _syncer(device: torch.device):
    """Wait for queued device work before reading a clock (no-op on CPU)."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None
