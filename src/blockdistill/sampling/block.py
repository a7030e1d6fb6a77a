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

import torch
from torch import Tensor

from blockdistill.families import VisionInputs
from blockdistill.layout import response_block_start
from blockdistill.sampling.denoiser import Denoiser
from blockdistill.sampling.output import GenerationOutput, GenerationStats
from blockdistill.sampling.policies import ConfidenceThreshold, UnmaskPolicy
from blockdistill.sampling.trace import BlockTrace, ProbRows, TraceSpec

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

    origin: Tensor  # long (B,): input row of each active row
    start: Tensor  # long (B,): s_b
    tail: Tensor  # long (B,): P_b - s_b, prompt tokens inside the first block
    buf: Tensor  # long (B, N*L): every decoded block, from clean index s_b

    def select(self, keep: Tensor) -> _Rows:
        return _Rows(self.origin[keep], self.start[keep], self.tail[keep], self.buf[keep])


class _Recorder:
    """Collects :class:`BlockTrace` rows; only built when recording is asked for."""

    def __init__(self, spec: TraceSpec, b: int, L: int) -> None:
        self.spec, self.L = spec, L
        self.blocks: list[list[tuple[Tensor, ProbRows, ProbRows]]] = [[] for _ in range(b)]
        self.rows: list[int] = list(range(b))  # active row -> input row

    def begin_block(self, b: int, device: torch.device) -> None:
        self.step = torch.zeros(b, self.L, dtype=torch.long, device=device)
        self.commit: ProbRows | None = None
        self.first: ProbRows | None = None

    def observe(self, logits: Tensor, jpos: Tensor, cand: Tensor, commit: Tensor, step: int) -> None:
        rows = ProbRows.from_probs(torch.softmax(logits, -1), self.spec.top_k)  # (B, K, ...)
        if self.commit is None:
            self.commit = _empty_like_rows(rows, self.L)
            self.first = _empty_like_rows(rows, self.L)
        if step == 1:
            _scatter_rows(self.first, rows, jpos, cand)
        _scatter_rows(self.commit, rows, jpos, commit)
        self.step.scatter_(1, jpos, torch.where(commit, step, self.step.gather(1, jpos)))

    def end_block(self) -> None:
        for a, r in enumerate(self.rows):
            self.blocks[r].append((self.step[a], self.commit[a], self.first[a]))

    def select(self, keep: list[int]) -> None:
        self.rows = [self.rows[a] for a in keep]

    def traces(self, prompt_lens: list[int], buffers: list[Tensor]) -> list[BlockTrace]:
        out = []
        for r, blocks in enumerate(self.blocks):
            tail = prompt_lens[r] % self.L
            step = torch.cat([s for s, _, _ in blocks])[tail:]
            commit = ProbRows.cat([c for _, c, _ in blocks])[tail:]
            first = ProbRows.cat([f for _, _, f in blocks])[tail:]
            out.append(BlockTrace(prompt_lens[r], self.L, buffers[r][tail: tail + step.shape[0]], step, commit, first))
        return out


def _empty_like_rows(rows: ProbRows, L: int) -> ProbRows:
    b = rows.probs.shape[0]
    probs = rows.probs.new_zeros(b, L, rows.probs.shape[-1])
    if rows.is_full:
        return ProbRows(probs)
    return ProbRows(probs, rows.indices.new_zeros(b, L, rows.indices.shape[-1]), rows.rest.new_zeros(b, L))


def _scatter_rows(dst: ProbRows, src: ProbRows, jpos: Tensor, where: Tensor) -> None:
    def put(d: Tensor, s: Tensor) -> None:
        extra = d.dim() - 2
        idx = jpos.view(*jpos.shape, *([1] * extra)).expand(*jpos.shape, *d.shape[2:])
        keep = where.view(*where.shape, *([1] * extra))
        d.scatter_(1, idx, torch.where(keep, s, d.gather(1, idx)))

    put(dst.probs, src.probs)
    if not dst.is_full:
        put(dst.indices, src.indices)
        put(dst.rest, src.rest)


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
    policy = policy if policy is not None else ConfidenceThreshold()
    spec = denoiser.spec
    L, mask_id, eos_id, shift = spec.block_size, spec.mask_token_id, spec.eos_token_id, spec.shift
    check_prompts(prompt_ids, prompt_lens, max_new_tokens, L, denoiser.max_context)
    sync = _syncer(prompt_ids.device)
    t0 = time.perf_counter()

    b0 = prompt_ids.shape[0]
    dev = prompt_ids.device
    prompt_lens = prompt_lens.to(dev)
    start = response_block_start(prompt_lens, L)
    tail = prompt_lens - start
    n_blocks = -(-(int(tail.max()) + max_new_tokens) // L)
    rows = _Rows(torch.arange(b0, device=dev), start, tail,
                 torch.full((b0, n_blocks * L), spec.pad_token_id, dtype=torch.long, device=dev))
    prompt_lens_list = prompt_lens.tolist()
    ar_L = torch.arange(L, device=dev)
    tail_ids = prompt_ids.gather(1, (start[:, None] + ar_L).clamp(max=prompt_ids.shape[1] - 1))

    state, carry = denoiser.prefill(prompt_ids, prompt_lens, vision)
    nfe = 1 if int(start.max()) > 0 else 0
    sync()
    prefill_s = time.perf_counter() - t0

    recorder = _Recorder(record, b0, L) if record is not None else None
    results: dict[int, Tensor] = {}
    decoded: dict[int, Tensor] = {}  # every decoded block of a row, untruncated (for traces)
    nfe_decode = row_forwards = 0
    # With shift, slot i-1 predicts token i; the block's own noisy slots are then useless when L == 1.
    need_noisy = not (shift and L == 1)
    pending: Tensor | None = None  # fused: the previous block, to be appended by the next forward
    min_tail = int(tail.min())

    for k in range(n_blocks):
        b = rows.origin.shape[0]
        idx_k = rows.start[:, None] + k * L + ar_L
        if k == 0:
            masked = ar_L[None, :] >= rows.tail[:, None]
            x = torch.where(masked, mask_id, tail_ids)
        else:
            masked = torch.ones(b, L, dtype=torch.bool, device=dev)
            x = torch.full((b, L), mask_id, dtype=torch.long, device=dev)
        if recorder is not None:
            recorder.begin_block(b, dev)
        step = 0
        while True:
            step += 1
            if step == 1:
                kmax = L - (min_tail if k == 0 else 0)
            elif policy.commits_all:
                break
            else:
                kmax = int(masked.sum(1).max())
                if kmax == 0:
                    break
            if kmax == L:
                jpos = ar_L.expand(b, L)
                cand = masked.clone()  # `masked` is updated in place below
            else:
                jpos = torch.sort((~masked).to(torch.int8), dim=1, stable=True).indices[:, :kmax]
                cand = masked.gather(1, jpos)

            # Query: [clean slots (nc) | noisy block]; the first `append` clean slots are kept.
            if cache == "none":
                if step > 1 or k > 0:
                    # The reference recomputes everything, prompt included, for every forward.
                    state, carry = denoiser.prefill(prompt_ids, prompt_lens, vision)
                    nfe += 1
                    if b < b0:
                        state = denoiser.select_rows(state, rows.origin)
                        carry = None if carry is None else carry[rows.origin]
                clean_ids = rows.buf[:, : k * L] if k else None
                clean_idx = rows.start[:, None] + torch.arange(k * L, device=dev)
                append = k * L  # clean slots are the leading `append` ones; this state is dropped after
            elif cache == "fused" and pending is not None:
                clean_ids, clean_idx, append = pending, idx_k - L, L
                pending = None
            else:
                clean_ids = clean_idx = None
                append = 0
            nc = 0 if clean_ids is None else clean_ids.shape[1]
            if need_noisy:
                ids = x if nc == 0 else torch.cat([clean_ids, x], 1)
                index = idx_k if nc == 0 else torch.cat([clean_idx, idx_k], 1)
            else:
                ids, index = clean_ids, clean_idx

            if shift:
                # Token j of the block comes from slot j-1; j = 0 from the last clean slot before
                # the block (in this query when nc > 0, else carried from an earlier pass).
                at = (nc - 1 + jpos).clamp(min=0)
            else:
                at = nc + jpos
            if ids is not None:
                logits = denoiser.forward(state, ids, index, append, at)
                nfe += 1
                nfe_decode += 1
                row_forwards += b
            else:
                logits = carry[:, None, :].clone()
            if shift:
                if nc > 0:
                    if cache == "fused" and not policy.commits_all:
                        carry = logits[:, 0]  # column 0 is j = 0 on a block's first step
                elif ids is not None:
                    first = jpos[:, :1] == 0
                    logits[:, 0] = torch.where(first, carry, logits[:, 0])

            logits[..., mask_id] = float("-inf")
            tok = logits.argmax(-1)
            conf = None
            if policy.needs_confidence:
                conf = torch.exp(logits.gather(-1, tok[..., None])[..., 0] - torch.logsumexp(logits, -1))
            commit = policy(conf, cand, step) & cand
            if recorder is not None:
                recorder.observe(logits, jpos, cand, commit, step)
            x.scatter_(1, jpos, torch.where(commit, tok, x.gather(1, jpos)))
            masked.scatter_(1, jpos, masked.gather(1, jpos) & ~commit)

        rows.buf[:, k * L:(k + 1) * L] = x
        if recorder is not None:
            recorder.end_block()
        made = (k + 1) * L - rows.tail
        done = made >= max_new_tokens
        if stop_at_eos:
            gen = (ar_L[None, :] >= rows.tail[:, None]) if k == 0 else torch.ones_like(masked)
            done = done | ((x == eos_id) & gen).any(1)
        if bool(done.any()):
            for a in done.nonzero()[:, 0].tolist():
                r = int(rows.origin[a])
                decoded[r] = rows.buf[a, : (k + 1) * L]
                results[r] = _finish(rows.buf[a], int(rows.tail[a]), (k + 1) * L, max_new_tokens,
                                     eos_id if stop_at_eos else None)
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            if recorder is not None:
                recorder.select(keep.tolist())
            rows = rows.select(keep)
            state = denoiser.select_rows(state, keep)
            x = x[keep]
            carry = None if carry is None else carry[keep]
        if cache == "block":
            at = torch.full((rows.origin.shape[0], 1), L - 1, dtype=torch.long, device=dev) if shift else None
            out = denoiser.forward(state, x, rows.start[:, None] + k * L + ar_L, L, at)
            nfe += 1
            nfe_decode += 1
            row_forwards += rows.origin.shape[0]
            if shift:
                carry = out[:, 0]
        elif cache == "fused":
            pending = x

    sync()
    wall = time.perf_counter() - t0
    seqs = [results[r] for r in range(b0)]
    traces = None
    if recorder is not None:
        traces = recorder.traces(prompt_lens_list, [decoded[r] for r in range(b0)])
    lengths = [int(s.shape[0]) for s in seqs]
    stats = GenerationStats(nfe=nfe, nfe_decode=nfe_decode, row_forwards=row_forwards,
                            generated_tokens=sum(lengths), lengths=lengths, wall_s=wall, prefill_s=prefill_s)
    return GenerationOutput(seqs, stats, traces)


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
