"""Stage 3: drop near-duplicate reports by embedding cosine similarity, in bounded memory.

Greedy, first occurrence wins: a report is dropped when its cosine similarity to an earlier
*kept* report reaches ``threshold``. Records stream in blocks of ``block_size``; each block is
compared with the kept set chunk by chunk (kept embeddings are stored in chunks of at most
``block_size`` rows), then with itself. No n x n matrix is ever formed:

- time ``O(n * k * d)`` for n records, k kept, embedding width d;
- memory ``O(k * d)`` for the kept embeddings plus ``O(block_size**2)`` per similarity tile.

Embedders are plain callables ``texts -> (n, d) float32, rows L2-normalised``: the offline
MiniLM (:class:`MiniLMEmbedder`, any Hugging Face encoder by path) or a cheap hashing one.

    python -c "from examples.echo_cxr.data.curation.dedup import *; \
print(HashingEmbedder()(['No pneumothorax.']).shape)"
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from blockdistill.metrics import bundled_minilm_path

from ..records import CXRRecord, Rejected, RejectSink


class Embedder(Protocol):
    """``texts -> (len(texts), dim)`` float32 array with unit-norm rows."""

    def __call__(self, texts: list[str]) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


@dataclass
class MiniLMEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a Hugging Face encoder (offline).

    A thin adapter over :class:`blockdistill.metrics.SentenceEncoder` (the SemScore encoder):
    one implementation of the sentence-transformers recipe for both metric and dedup.
    """

    model_path: Path | None = None
    """Any local ``AutoModel`` folder; ``None`` for the bundled all-MiniLM-L6-v2."""
    batch_size: int = 64
    max_length: int = 256
    dtype: str = "auto"
    """``float32``, ``bfloat16`` (autocast) or ``auto``: bfloat16 where the CPU/GPU computes it
    natively (AMX / AVX512-BF16: ~2.5x faster here; cosines move by ~1e-4, which can flip only
    pairs within that distance of the threshold). The resolved precision is in :meth:`params`."""
    _encoder: Any = field(default=None, init=False, repr=False)

    def _load(self) -> Any:
        if self._encoder is None:
            from blockdistill.metrics import SentenceEncoder  # deferred: loads transformers

            self._encoder = SentenceEncoder(self.model_path or bundled_minilm_path(), max_length=self.max_length,
                                            batch_size=self.batch_size, dtype=self.dtype)
        return self._encoder

    def params(self) -> dict[str, Any]:
        from blockdistill.metrics.semscore import resolve_dtype

        dtype = str(resolve_dtype(self.dtype, "cpu")).removeprefix("torch.")
        return {"embedder": "hf-mean-pool", "model_path": str(self.model_path or bundled_minilm_path()),
                "max_length": self.max_length, "dtype": dtype}

    def __call__(self, texts: list[str]) -> np.ndarray:
        import warnings

        with warnings.catch_warnings():  # dedup compares the first max_length wordpieces; that is fine
            warnings.filterwarnings("ignore", message="SemScore: .* exceed max_length")
            return self._load().encode(texts).numpy().astype(np.float32)


@dataclass
class HashingEmbedder:
    """Hashed bag of word uni- and bigrams, L2-normalised: deterministic, instant, no model.

    Catches verbatim and lightly edited duplicates only; it has no notion of paraphrase.
    """

    dim: int = 256

    def params(self) -> dict[str, Any]:
        return {"embedder": "hashing", "dim": self.dim}

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def report_text(record: CXRRecord) -> str:
    """What dedup compares: the (standardised) findings and impression."""
    return f"{record.findings}\n{record.impression}".strip() or record.report


def observation_signature(record: CXRRecord) -> str:
    """Group key for :attr:`SemanticDedup.group`: the stage-2 observation labels.

    Two standardised normal reports share most sentences, so one that adds "calcified
    granuloma" can sit above a 0.95 cosine from one that does not; grouping by labels keeps
    clinically different reports apart whatever their wording overlap.
    """
    return json.dumps(record.metadata.get("observations", {}), sort_keys=True)


@dataclass
class _Kept:
    """Kept embeddings in chunks of at most ``block_size`` rows, with keys and group ids."""

    emb: list[np.ndarray] = field(default_factory=list)
    keys: list[list[str]] = field(default_factory=list)
    groups: list[np.ndarray] = field(default_factory=list)


@dataclass
class SemanticDedup:
    """Keep the first of every group of reports whose cosine similarity is >= ``threshold``."""

    embedder: Embedder
    threshold: float = 0.95
    block_size: int = 1024
    text: Callable[[CXRRecord], str] = report_text
    group: Callable[[CXRRecord], str] | None = None
    """Optional key: only records with equal keys can duplicate each other (e.g.
    :func:`observation_signature`). ``None`` compares everything, as the paper does."""
    name: str = "dedup"
    on_similarity: Callable[[tuple[int, int]], None] | None = None
    """Called with the shape of every similarity tile computed (to observe the memory bound)."""
    _group_ids: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold={self.threshold}; expected a cosine in (0, 1]")
        if self.block_size < 1:
            raise ValueError(f"block_size={self.block_size}; expected >= 1")

    def params(self) -> dict[str, Any]:
        group = None if self.group is None else getattr(self.group, "__name__", repr(self.group))
        return {"threshold": self.threshold, "embedder": self.embedder.params(), "group": group,
                "text": getattr(self.text, "__name__", repr(self.text))}

    def _tile(self, a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
        if self.on_similarity is not None:
            self.on_similarity((a.shape[0], b.shape[0]))
        sims = a @ b.T
        if self.group is not None:
            sims[ga[:, None] != gb[None, :]] = -np.inf
        return sims

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield first occurrences; reject each near-duplicate naming the record it repeats."""
        self._group_ids = {}
        kept = _Kept()
        block: list[CXRRecord] = []
        for record in records:
            block.append(record)
            if len(block) == self.block_size:
                yield from self._block(block, kept, reject)
                block = []
        if block:
            yield from self._block(block, kept, reject)

    def _block(self, block: list[CXRRecord], kept: _Kept, reject: RejectSink) -> Iterator[CXRRecord]:
        # Standardised corpora repeat texts verbatim (IU-Xray: ~20%); embed each text once.
        texts = [self.text(r) for r in block]
        unique = list(dict.fromkeys(texts))
        unique_emb = np.asarray(self.embedder(unique), dtype=np.float32)
        if unique_emb.ndim != 2 or unique_emb.shape[0] != len(unique):
            raise ValueError(f"embedder returned shape {unique_emb.shape} for {len(unique)} texts")
        row_of = {text: i for i, text in enumerate(unique)}
        emb = unique_emb[[row_of[t] for t in texts]]
        groups = np.array([self._group_ids.setdefault(self.group(r), len(self._group_ids))
                           if self.group else 0 for r in block], dtype=np.int64)
        # Best earlier kept match per row, over the kept set chunk by chunk.
        best = np.full(len(block), -np.inf, dtype=np.float32)
        best_key: list[str | None] = [None] * len(block)
        rows = np.arange(len(block))
        for chunk, keys, chunk_groups in zip(kept.emb, kept.keys, kept.groups):
            sims = self._tile(emb, chunk, groups, chunk_groups)
            arg = sims.argmax(axis=1)
            val = sims[rows, arg]
            for i in np.flatnonzero(val > best):
                best[i], best_key[i] = val[i], keys[arg[i]]
        within = self._tile(emb, emb, groups, groups)
        kept_here: list[int] = []
        for i, record in enumerate(block):
            # Only earlier rows of this block that were themselves kept can absorb row i.
            if kept_here:
                j = kept_here[int(within[i, kept_here].argmax())]
                if within[i, j] > best[i]:
                    best[i], best_key[i] = within[i, j], block[j].key
            if best[i] >= self.threshold:
                reject(Rejected.of(record, self.name,
                                   f"near-duplicate of {best_key[i]} (cosine {best[i]:.3f} >= "
                                   f"{self.threshold})"))
                continue
            kept_here.append(i)
            yield record
        self._keep(kept, emb[kept_here], [block[i].key for i in kept_here], groups[kept_here])

    def _keep(self, kept: _Kept, emb: np.ndarray, keys: list[str], groups: np.ndarray) -> None:
        # Top up the last chunk to block_size rows before starting a new one, so tiles stay
        # block x block however many rows each block keeps.
        while keys:
            if kept.keys and len(kept.keys[-1]) < self.block_size:
                room = self.block_size - len(kept.keys[-1])
                kept.emb[-1] = np.concatenate([kept.emb[-1], emb[:room]])
                kept.groups[-1] = np.concatenate([kept.groups[-1], groups[:room]])
                kept.keys[-1].extend(keys[:room])
            else:
                room = self.block_size
                kept.emb.append(emb[:room].copy())
                kept.groups.append(groups[:room].copy())
                kept.keys.append(list(keys[:room]))
            emb, keys, groups = emb[room:], keys[room:], groups[room:]
