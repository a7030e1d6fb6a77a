"""A toy "language model" with an explicitly given joint distribution over blocks.

``ToyJoint`` maps a *prefix* (every clean token before a block's first generated position:
the prompt, plus earlier blocks) to an exact distribution over the *continuation* that fills
the rest of that block (``L - len(prefix) % L`` tokens). It implements the samplers'
:class:`~blockdistill.sampling.denoiser.Denoiser` protocol: asked about a block whose
generated slots are partly masked, it returns, at each masked slot, the exact conditional
marginal given the tokens already visible in the block. Unknown prefixes continue with EOS.

With it, claims about decoding and distillation targets become checkable against exact
probabilities, e.g. "the product of the commit-step rows along the commit order is the
joint probability of the block" or "the first-step argmax can be a zero-probability block".

Example::

    A, B, EOS, MASK = 0, 1, 8, 9
    toy = ToyJoint({(5, 6, 7, 4): {(A, B, EOS, EOS): 0.5, (B, A, EOS, EOS): 0.5}}, block_size=4,
                   vocab_size=10, eos_token_id=EOS, mask_token_id=MASK)
    toy.marginals((5, 6, 7, 4), (MASK,) * 4)   # (4, V): A/B 0.5 each at slots 0 and 1
    toy.mean_field_block((5, 6, 7, 4))          # (A, A, EOS, EOS): probability 0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from blockdistill.models.adapter import BlockSpec
from blockdistill.models.families import VisionInputs

__all__ = ["NEG_LOGIT", "ToyJoint", "ToyState", "ToyVocab"]

NEG_LOGIT = -1e9
"""Logit of impossible tokens: ``exp`` underflows to exactly 0 and ``0 * NEG_LOGIT`` stays finite."""

Block = tuple[int, ...]


@dataclass
class ToyState:
    """Per-row clean context (clean indices ``0 .. len-1``) and prompt length."""

    context: list[list[int]]
    prompt_lens: list[int]


class ToyJoint:
    """Exact block distributions keyed by prefix; a :class:`Denoiser` over them.

    Invariant: every distribution is over continuations of the right length, with
    non-negative probabilities summing to 1 (checked at construction).
    """

    def __init__(self, table: Mapping[Sequence[int], Mapping[Sequence[int], float]], *, block_size: int,
                 vocab_size: int, eos_token_id: int, mask_token_id: int, pad_token_id: int | None = None) -> None:
        if not 0 <= mask_token_id < vocab_size or not 0 <= eos_token_id < vocab_size:
            raise ValueError(f"mask ({mask_token_id}) and EOS ({eos_token_id}) ids must lie in 0..{vocab_size - 1}")
        if mask_token_id == eos_token_id:
            raise ValueError("mask and EOS ids must differ")
        pad = eos_token_id if pad_token_id is None else pad_token_id
        self.spec = BlockSpec(block_size=block_size, mask_token_id=mask_token_id, eos_token_id=eos_token_id,
                              pad_token_id=pad, shift=False)
        self.vocab_size = vocab_size
        self.table: dict[Block, dict[Block, float]] = {}
        for prefix, dist in table.items():
            prefix = tuple(int(t) for t in prefix)
            if not prefix:
                raise ValueError("prefixes must be non-empty (prompts have at least one token)")
            width = self.continuation_length(len(prefix))
            clean: dict[Block, float] = {}
            for cont, p in dist.items():
                cont = tuple(int(t) for t in cont)
                if len(cont) != width:
                    raise ValueError(f"prefix {prefix}: continuation {cont} has {len(cont)} tokens, expected {width} "
                                     f"(the rest of its block of {block_size})")
                if p < 0:
                    raise ValueError(f"prefix {prefix}: continuation {cont} has negative probability {p}")
                if any(not 0 <= t < vocab_size or t == mask_token_id for t in cont):
                    raise ValueError(f"prefix {prefix}: continuation {cont} uses an id outside the vocabulary "
                                     "or the mask id")
                if p > 0:
                    clean[cont] = clean.get(cont, 0.0) + float(p)
            total = sum(clean.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"prefix {prefix}: probabilities sum to {total}, expected 1")
            self.table[prefix] = {c: p / total for c, p in clean.items()}

    # ------------------------------------------------------------------ exact queries
    @property
    def max_context(self) -> int | None:
        return None

    def continuation_length(self, prefix_len: int) -> int:
        """Tokens that complete the block holding clean index ``prefix_len``."""
        return self.spec.block_size - prefix_len % self.spec.block_size

    def distribution(self, prefix: Sequence[int]) -> dict[Block, float]:
        """The exact distribution over continuations of ``prefix`` (all-EOS when unknown)."""
        prefix = tuple(int(t) for t in prefix)
        dist = self.table.get(prefix)
        if dist is None:
            return {(self.spec.eos_token_id,) * self.continuation_length(len(prefix)): 1.0}
        return dist

    def prob(self, prefix: Sequence[int], continuation: Sequence[int]) -> float:
        """Exact probability of ``continuation`` after ``prefix``."""
        return self.distribution(prefix).get(tuple(int(t) for t in continuation), 0.0)

    def sequence_prob(self, prompt: Sequence[int], generated: Sequence[int]) -> float:
        """Exact probability of a whole generation (block by block, the chain rule over blocks)."""
        prefix, gen, p = list(prompt), list(generated), 1.0
        while gen:
            w = self.continuation_length(len(prefix))
            p *= self.prob(prefix, gen[:w])
            prefix, gen = prefix + gen[:w], gen[w:]
        return p

    def marginals(self, prefix: Sequence[int], visible: Sequence[int]) -> Tensor:
        """Float64 ``(W, V)``: exact conditional marginal of each continuation slot given the
        non-mask entries of ``visible`` (``W`` ids, mask id = unknown).

        Visible slots get a point mass on their token. If the visible tokens have zero
        probability the masked rows are uniform over non-mask tokens (a sampler that commits
        argmaxes of these rows never gets there).
        """
        mask = self.spec.mask_token_id
        vis = [int(t) for t in visible]
        # Exact rational sums: equal marginals come out as identical floats whatever the
        # summation order, so argmax and confidence ties break the same way everywhere.
        mass: dict[tuple[int, int], Fraction] = {}
        total = Fraction(0)
        for cont, p in self.distribution(prefix).items():
            if len(cont) != len(vis):
                raise ValueError(f"block has {len(vis)} open slots but prefix {tuple(prefix)} continues with "
                                 f"{len(cont)} tokens")
            if all(v == mask or v == c for v, c in zip(vis, cont)):
                p = Fraction(p)
                total += p
                for j, c in enumerate(cont):
                    mass[j, c] = mass.get((j, c), Fraction(0)) + p
        out = torch.zeros(len(vis), self.vocab_size, dtype=torch.float64)
        if total > 0:
            for (j, c), m in mass.items():
                out[j, c] = float(m / total)
        else:
            out.fill_(1.0 / (self.vocab_size - 1))
            out[:, mask] = 0.0
        for j, v in enumerate(vis):
            if v != mask:
                out[j].zero_()
                out[j, v] = 1.0
        return out

    def support(self, prefix: Sequence[int]) -> list[Block]:
        """Continuations of ``prefix`` with positive probability."""
        return list(self.distribution(prefix))

    # ------------------------------------------------------------------ Denoiser protocol
    def prefill(self, prompt_ids: Tensor, prompt_lens: Tensor,
                vision: VisionInputs | None = None) -> tuple[ToyState, Tensor | None]:
        """Context = the whole blocks of each prompt before its first response block."""
        if vision is not None:
            raise ValueError("the toy joint model takes no vision inputs")
        size = self.spec.block_size
        ctx, plens = [], []
        for row, n in zip(prompt_ids.tolist(), prompt_lens.tolist()):
            if n < 1:
                raise ValueError("every prompt needs at least one token")
            ctx.append(row[: (n // size) * size])
            plens.append(int(n))
        return ToyState(ctx, plens), None

    def forward(self, state: ToyState, query_ids: Tensor, query_index: Tensor, append: int,
                logits_at: Tensor | None) -> Tensor | None:
        """Append ``append`` clean slots, then answer the noisy slots with exact log-marginals.

        Logits are ``log p`` (:data:`NEG_LOGIT` where ``p = 0``), so a softmax returns the
        exact conditional marginals; at non-noisy or visible slots they are point masses.
        """
        size = self.spec.block_size
        ids, idx = query_ids.tolist(), query_index.tolist()
        out = None if logits_at is None else torch.full((*logits_at.shape, self.vocab_size), NEG_LOGIT,
                                                        dtype=torch.float32)
        for b, (row_ids, row_idx) in enumerate(zip(ids, idx)):
            ctx = state.context[b]
            for t, i in zip(row_ids[:append], row_idx[:append]):
                if i != len(ctx):
                    raise ValueError(f"row {b}: appended slot for clean index {i} but the context holds "
                                     f"{len(ctx)} tokens (blocks must be appended in order)")
                ctx.append(int(t))
            if out is None:
                continue
            noisy_ids, noisy_idx = row_ids[append:], row_idx[append:]
            if not noisy_idx:
                raise ValueError("logits were asked for but the query has no noisy slots")
            start = (noisy_idx[0] // size) * size
            if any(i // size != start // size for i in noisy_idx):
                raise ValueError(f"row {b}: noisy slots span several blocks ({noisy_idx})")
            if len(ctx) < start:
                raise ValueError(f"row {b}: block at {start} is ahead of the context ({len(ctx)} tokens)")
            plen = state.prompt_lens[b]
            by_index = dict(zip(noisy_idx, noisy_ids))
            first_gen = max(start, plen)
            # Prefix: context before the block, then the prompt tail (prompt tokens inside the block).
            missing = [i for i in range(start, first_gen) if i not in by_index]
            if missing:
                raise ValueError(f"row {b}: prompt-tail slots {missing} of the first block were not sent in the query")
            tail = [int(by_index[i]) for i in range(start, first_gen)]
            prefix = ctx[:start] + tail
            open_idx = list(range(first_gen, start + size))
            visible = [int(by_index.get(i, self.spec.mask_token_id)) for i in open_idx]
            probs = self.marginals(prefix, visible)
            rows = {i: probs[j] for j, i in enumerate(open_idx)}
            for k, q in enumerate(logits_at[b].tolist()):
                i = row_idx[q]
                if q < append:
                    raise ValueError("the toy model only returns logits at noisy slots")
                if i in rows:
                    p = rows[i]
                else:  # a prompt-tail slot: a point mass on its own token
                    p = torch.zeros(self.vocab_size, dtype=torch.float64)
                    p[int(row_ids[q])] = 1.0
                out[b, k] = torch.where(p > 0, p.clamp(min=1e-300).log(), torch.tensor(NEG_LOGIT, dtype=p.dtype))
        return out

    def select_rows(self, state: ToyState, rows: Tensor) -> ToyState:
        keep = rows.tolist()
        return ToyState([state.context[r] for r in keep], [state.prompt_lens[r] for r in keep])

    # ------------------------------------------------------------------ reference decoders
    def greedy_block(self, prefix: Sequence[int], threshold: float = 0.85) -> tuple[Block, list[int]]:
        """Reference threshold decoding of one continuation (DESIGN.md §3): commit every open
        slot whose top probability is > ``threshold``, else the single most confident one.
        Returns the block and each slot's commit step (1-based)."""
        mask = self.spec.mask_token_id
        w = self.continuation_length(len(prefix))
        vis, steps, step = [mask] * w, [0] * w, 0
        while mask in vis:
            step += 1
            probs = self.marginals(prefix, vis)
            probs[:, mask] = 0.0
            top, arg = probs.max(-1)
            open_ = [j for j in range(w) if vis[j] == mask]
            commit = [j for j in open_ if float(top[j]) > threshold]
            if not commit:
                commit = [max(open_, key=lambda j: (float(top[j]), -j))]
            for j in commit:
                vis[j], steps[j] = int(arg[j]), step
        return tuple(vis), steps

    def mean_field_block(self, prefix: Sequence[int]) -> Block:
        """Argmax of each slot's first-step marginal (what a factorised one-step model trained
        on first-step marginals decodes)."""
        probs = self.marginals(prefix, [self.spec.mask_token_id] * self.continuation_length(len(prefix)))
        probs[:, self.spec.mask_token_id] = 0.0
        return tuple(int(t) for t in probs.argmax(-1))

    def __repr__(self) -> str:
        return f"ToyJoint({len(self.table)} prefixes, L={self.spec.block_size}, V={self.vocab_size})"


class ToyVocab:
    """Id layout of a toy vocabulary: content tokens, prompt tokens, then EOS and MASK."""

    def __init__(self, num_content: int = 4, num_prompt: int = 6) -> None:
        self.content = list(range(num_content))
        self.prompt = list(range(num_content, num_content + num_prompt))
        self.eos = num_content + num_prompt
        self.mask = self.eos + 1
        self.size = self.mask + 1

    def toy(self, table: dict, block_size: int) -> ToyJoint:
        """A :class:`ToyJoint` over this vocabulary."""
        return ToyJoint(table, block_size=block_size, vocab_size=self.size, eos_token_id=self.eos,
                        mask_token_id=self.mask)
