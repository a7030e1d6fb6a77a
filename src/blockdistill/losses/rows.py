"""``TokenDists``: the one type for teacher rows, distributions at a set of positions stored
as full rows or top-k rows.

Full vocabulary rows are exact but large (151k floats per token at Qwen scale); top-k rows
keep the k most likely ids, their probabilities and the leftover mass, which the losses treat
as one extra bucket (:mod:`blockdistill.losses.distill`). Both forms share one type so that the
sampler's trace recorder, records, shards, batches, target builders and losses never branch on
the storage choice; it lives in the loss layer so that the losses import it (the samplers and
the distillation code sit above).

Storage never changes a row's answer to "which token is most likely": :meth:`TokenDists.argmax`
is the lowest token id among the row's largest probabilities (what the samplers commit, see
:func:`blockdistill.sampling.policies.proposals`), and top-k rows keep, among tied
probabilities at the cut, the lowest ids (:func:`top_k_rows`), so full and top-k rows of one
distribution name the same argmax, ties included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenDists", "top_k_rows"]


def top_k_rows(values: Tensor, k: int, ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of each row, ties broken towards the lowest token id.

    Args:
        values: float ``(*S, n)`` probabilities.
        k: entries to keep (``<= n``).
        ids: long ``(*S, n)`` token id of each entry (distinct within a row); None: the entry's
            own column (full rows).
    Returns:
        ``(vals, idx)``, each ``(*S, k)``: probabilities in descending order (equal ones by
        increasing id) and their token ids. ``torch.topk`` alone makes no promise about which
        of several tied entries it keeps or in which order.
    """
    if ids is not None:  # put entries in id order first, so that stable sorts prefer low ids
        order = ids.argsort(-1)
        values, ids = values.gather(-1, order), ids.gather(-1, order)
    kth = values.topk(k, dim=-1).values[..., -1:]
    above = values > kth
    tied = values == kth
    # Every entry above the k-th value, then the lowest-id tied entries until k are kept.
    keep = above | (tied & (tied.cumsum(-1) <= k - above.sum(-1, keepdim=True)))
    cols = keep.nonzero()[:, -1].view(*values.shape[:-1], k)  # row-major: ascending columns
    vals = values.gather(-1, cols)
    vals, order = vals.sort(dim=-1, descending=True, stable=True)
    cols = cols.gather(-1, order)
    return vals, (cols if ids is None else ids.gather(-1, cols))


@dataclass
class TokenDists:
    """Distributions over ``vocab_size`` tokens at positions of leading shape ``S``.

    Exactly one form is set: ``probs`` (full rows) or ``indices``/``values``/``leftover``
    (top-k). Invariant: every row sums to 1 (top-k: ``values.sum(-1) + leftover == 1``).
    """

    vocab_size: int
    """V: size of the vocabulary the rows are over."""
    probs: Tensor | None = None
    """Float ``(*S, V)``: full rows."""
    indices: Tensor | None = None
    """Long ``(*S, k)``: top-k token ids, most likely first."""
    values: Tensor | None = None
    """Float ``(*S, k)``: their probabilities."""
    leftover: Tensor | None = None
    """Float ``(*S,)``: mass outside the k ids."""

    def __post_init__(self) -> None:
        topk = (self.indices, self.values, self.leftover)
        if self.probs is not None:
            if any(t is not None for t in topk):
                raise ValueError("TokenDists takes either probs or indices/values/leftover, not both")
            if self.probs.shape[-1] != self.vocab_size:
                raise ValueError(f"probs rows have {self.probs.shape[-1]} entries but vocab_size is {self.vocab_size}")
        elif any(t is None for t in topk):
            raise ValueError("top-k TokenDists needs indices, values and leftover")
        elif self.indices.shape != self.values.shape or self.indices.shape[:-1] != self.leftover.shape:
            raise ValueError(f"top-k shapes disagree: indices {tuple(self.indices.shape)}, values "
                             f"{tuple(self.values.shape)}, leftover {tuple(self.leftover.shape)}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def full(cls, probs: Tensor) -> TokenDists:
        """From full rows ``(*S, V)``."""
        return cls(vocab_size=probs.shape[-1], probs=probs)

    @classmethod
    def from_probs(cls, probs: Tensor, top_k: int | None = None) -> TokenDists:
        """From full rows ``(*S, V)``, kept whole (``top_k=None``) or cut to the ``top_k`` largest."""
        if top_k is None or top_k >= probs.shape[-1]:
            return cls.full(probs) if top_k is None else cls.full(probs).to_topk(probs.shape[-1])
        return cls.full(probs).to_topk(top_k)

    @classmethod
    def one_hot(cls, tokens: Tensor, vocab_size: int) -> TokenDists:
        """Point masses on ``tokens`` ``(*S,)`` as top-1 rows (leftover 0)."""
        dev = tokens.device
        return cls(vocab_size, indices=tokens.long()[..., None], values=torch.ones(*tokens.shape, 1, device=dev),
                   leftover=torch.zeros(tokens.shape, device=dev))

    # ------------------------------------------------------------------ views
    @property
    def is_topk(self) -> bool:
        return self.probs is None

    @property
    def k(self) -> int:
        """Entries per row: V for full rows, k for top-k."""
        return self.vocab_size if self.probs is not None else self.indices.shape[-1]

    @property
    def shape(self) -> torch.Size:
        """The leading shape ``S``."""
        return self.probs.shape[:-1] if self.probs is not None else self.leftover.shape

    def to_topk(self, k: int) -> TokenDists:
        """Top-``k`` rows (from full rows, or fewer entries of top-k rows); among tied
        probabilities at the cut the lowest ids are kept (:func:`top_k_rows`)."""
        if self.probs is not None:
            vals, idx = top_k_rows(self.probs, min(k, self.vocab_size))
            left = (1 - vals.sum(-1)).clamp(min=0)
            return TokenDists(self.vocab_size, indices=idx, values=vals,
                              leftover=torch.zeros_like(left) if k >= self.vocab_size else left)
        if k >= self.k:
            return self
        vals, idx = top_k_rows(self.values, k, self.indices)
        return TokenDists(self.vocab_size, indices=idx, values=vals,
                          leftover=(self.leftover + self.values.sum(-1) - vals.sum(-1)).clamp(min=0))

    def to_dense(self) -> TokenDists:
        """Full rows. Top-k rows spread their leftover evenly over the ids outside the top-k."""
        if self.probs is not None:
            return self
        rest = self.vocab_size - self.k
        fill = self.leftover / rest if rest > 0 else torch.zeros_like(self.leftover)
        probs = fill[..., None].expand(*self.shape, self.vocab_size).clone()
        probs.scatter_(-1, self.indices.long(), self.values.to(probs.dtype))
        return TokenDists.full(probs)

    def argmax(self) -> Tensor:
        """Long ``(*S,)``: most likely token of each row; on exact ties the lowest token id
        (the samplers' rule), whatever the storage and the order of stored top-k entries."""
        if self.probs is not None:
            return self.probs.argmax(-1)  # the first maximum: the lowest id
        best = self.values == self.values.max(-1, keepdim=True).values
        none = torch.full_like(self.indices, torch.iinfo(self.indices.dtype).max)
        return torch.where(best, self.indices, none).min(-1).values

    def prob_of(self, tokens: Tensor) -> Tensor:
        """Float ``(*S,)``: probability of ``tokens`` ``(*S,)``. For top-k rows a token outside
        the top-k gets 0 (its probability is unknown, at most ``leftover``)."""
        tokens = tokens.long()
        if self.probs is not None:
            return self.probs.gather(-1, tokens[..., None]).squeeze(-1)
        hit = self.indices == tokens[..., None]
        return torch.where(hit, self.values, torch.zeros_like(self.values)).sum(-1)

    # ------------------------------------------------------------------ tensor plumbing
    def _fields(self) -> tuple[Tensor, ...]:
        """The stored tensors: ``(probs,)`` or ``(indices, values, leftover)``."""
        return (self.probs,) if self.probs is not None else (self.indices, self.values, self.leftover)

    def _build(self, fields: list[Tensor]) -> TokenDists:
        if self.probs is not None:
            return TokenDists(self.vocab_size, probs=fields[0])
        return TokenDists(self.vocab_size, indices=fields[0], values=fields[1], leftover=fields[2])

    def _map(self, fn) -> TokenDists:
        """Apply ``fn(tensor, has_row_dim)`` to every stored tensor (the leftover has no row dim)."""
        rows = (True,) if self.probs is not None else (True, True, False)
        return self._build([fn(t, r) for t, r in zip(self._fields(), rows)])

    def _zip(self, other: TokenDists, fn) -> TokenDists:
        """Like :meth:`_map` over pairs ``(self's tensor, other's tensor, has_row_dim)``."""
        rows = (True,) if self.probs is not None else (True, True, False)
        return self._build([fn(a, b, r) for a, b, r in zip(self._fields(), other._fields(), rows)])

    def __getitem__(self, index) -> TokenDists:
        """Index the leading shape, e.g. ``dists[b]`` or ``dists[mask]``."""
        return self._map(lambda t, _row: t[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TokenDists:
        """Move to ``device``; ``dtype`` casts the probability tensors only (never the ids)."""
        def move(t: Tensor, _row: bool) -> Tensor:
            cast = dtype if (dtype is not None and t.is_floating_point()) else None
            return t.to(device=device, dtype=cast)
        return self._map(move)

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        """Named tensors for serialisation (``prefix.probs`` or ``prefix.indices`` ...); ids are
        stored as int32 (half the bytes; :meth:`from_tensors` restores long)."""
        if self.probs is not None:
            return {f"{prefix}.probs": self.probs}
        return {f"{prefix}.indices": self.indices.to(torch.int32), f"{prefix}.values": self.values,
                f"{prefix}.leftover": self.leftover}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], prefix: str, vocab_size: int) -> TokenDists | None:
        """Inverse of :meth:`tensors`; None when no tensor carries ``prefix``."""
        if f"{prefix}.probs" in tensors:
            return cls(vocab_size, probs=tensors[f"{prefix}.probs"])
        if f"{prefix}.indices" in tensors:
            return cls(vocab_size, indices=tensors[f"{prefix}.indices"].long(), values=tensors[f"{prefix}.values"],
                       leftover=tensors[f"{prefix}.leftover"])
        return None

    @staticmethod
    def cat(parts: list[TokenDists]) -> TokenDists:
        """Concatenate along the first leading dim; all parts must share form, V and k."""
        first = _same_form(parts)
        if not first.is_topk:
            return TokenDists(first.vocab_size, probs=torch.cat([p.probs for p in parts]))
        return TokenDists(first.vocab_size, indices=torch.cat([p.indices for p in parts]),
                          values=torch.cat([p.values for p in parts]),
                          leftover=torch.cat([p.leftover for p in parts]))

    @classmethod
    def point_masses(cls, shape: tuple[int, ...], like: TokenDists, token: int = 0) -> TokenDists:
        """Rows of leading shape ``shape`` in the form of ``like`` (full, or top-k with its k),
        each a point mass on ``token``: valid filler for rows that are padding or not yet written."""
        dev = (like.probs if like.probs is not None else like.values).device
        if like.probs is not None:
            probs = torch.zeros(*shape, like.vocab_size, dtype=like.probs.dtype, device=dev)
            probs[..., token] = 1
            return cls(like.vocab_size, probs=probs)
        k = like.k
        ids = torch.arange(k, dtype=like.indices.dtype, device=dev)
        ids = torch.where(ids == 0, token, torch.where(ids <= token, ids - 1, ids))  # distinct, token first
        vals = torch.zeros(*shape, k, dtype=like.values.dtype, device=dev)
        vals[..., 0] = 1
        return cls(like.vocab_size, indices=ids.expand(*shape, k).clone(), values=vals,
                   leftover=torch.zeros(shape, dtype=like.leftover.dtype, device=dev))

    def where(self, cond: Tensor, other: TokenDists) -> TokenDists:
        """Row-wise select: ``self``'s row where ``cond`` (bool, the leading shape), else ``other``'s
        (same form, V and k)."""
        _same_form([self, other])
        return self._zip(other, lambda a, b, row: torch.where(cond[..., None] if row else cond, a, b))

    def scatter(self, index: Tensor, src: TokenDists, where: Tensor) -> TokenDists:
        """A copy with ``self[b, index[b, j]] = src[b, j]`` where ``where[b, j]``, for leading shapes
        ``(B, N)`` (``self``) and ``(B, K)`` (``index``, ``src``, ``where``); ``index`` distinct per row."""
        _same_form([self, src])

        def put(d: Tensor, s: Tensor, row: bool) -> Tensor:
            idx = index[..., None].expand(*index.shape, d.shape[-1]) if row else index
            keep = where[..., None] if row else where
            return d.scatter(1, idx, torch.where(keep, s, d.gather(1, idx)))
        return self._zip(src, put)

    @staticmethod
    def pad_stack(parts: list[TokenDists], length: int) -> TokenDists:
        """Stack 1-D-leading parts ``(G_b, ...)`` into ``(B, length, ...)``, padding with point masses
        on token 0 (padded rows are never in a loss; they only need to be valid distributions)."""
        first = _same_form(parts)
        out = TokenDists.point_masses((len(parts), length), first)
        for i, p in enumerate(parts):
            g = p.shape[0]
            for d, s in zip(out._fields(), p._fields()):
                d[i, :g] = s
        return out

def _same_form(parts: list[TokenDists]) -> TokenDists:
    if not parts:
        raise ValueError("need at least one TokenDists")
    first = parts[0]
    for p in parts[1:]:
        if p.vocab_size != first.vocab_size or p.is_topk != first.is_topk or p.k != first.k:
            raise ValueError(f"cannot combine TokenDists of different forms: V={first.vocab_size}, k={first.k} "
                             f"vs V={p.vocab_size}, k={p.k}")
    return first
