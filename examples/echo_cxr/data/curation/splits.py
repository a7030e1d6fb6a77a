"""Stage 5: seeded, reproducible splits: a balanced evaluation set and a proportional DCD subset.

Paper sizes: an evaluation set of 2,000 English + 2,000 Chinese reports balanced across
MIMIC-CXR, CheXpert-Plus and ReXGradient, and a 30k DCD subset drawn from the rest in
proportion to each source's share. The stage drops nothing; it labels every record
``metadata["split"] = "eval" | "train"`` and ``metadata["dcd"] = True | False`` (DCD records
are a subset of train). :func:`write_splits` then writes one JSONL per split.

Draws depend only on the seed and the set of record keys, never on stream order.

    SplitAssigner(dcd_size=300, eval_sizes={"en": 50}, eval_sources=("iu_xray",))
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..records import CXRRecord, RejectSink
from .base import JsonlRecords, atomic_open

PAPER_EVAL_SOURCES = ("mimic_cxr", "chexpert_plus", "rexgradient")


def _quotas(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder (sums to ``total``)."""
    mass = sum(weights.values())
    if mass == 0:
        return {k: 0 for k in weights}
    exact = {k: total * w / mass for k, w in weights.items()}
    quota = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (quota[k] - exact[k], k))[: total - sum(quota.values())]:
        quota[k] += 1
    return quota


@dataclass
class SplitAssigner:
    """Label records eval/train and mark a DCD subset of train; raises when a quota can't be met."""

    dcd_size: int = 30_000
    eval_sizes: dict[str, int] = field(default_factory=lambda: {"en": 2000, "zh": 2000})
    """Evaluation records per language."""
    eval_sources: tuple[str, ...] = PAPER_EVAL_SOURCES
    """Sources the evaluation set is balanced across (equal share each)."""
    seed: int = 0
    strict: bool = True
    """Raise when a source/language cannot fill its quota; else take what there is."""
    name: str = "splits"

    def __post_init__(self) -> None:
        if self.dcd_size < 0 or any(n < 0 for n in self.eval_sizes.values()):
            raise ValueError(f"dcd_size={self.dcd_size}, eval_sizes={self.eval_sizes}; expected >= 0")
        if any(n > 0 for n in self.eval_sizes.values()) and not self.eval_sources:
            raise ValueError("eval_sizes asks for evaluation records but eval_sources is empty")

    def params(self) -> dict[str, Any]:
        return {"dcd_size": self.dcd_size, "eval_sizes": dict(sorted(self.eval_sizes.items())),
                "eval_sources": list(self.eval_sources), "seed": self.seed, "strict": self.strict}

    def _rng(self, *parts: str) -> random.Random:
        return random.Random(":".join([str(self.seed), *parts]))

    def assign(self, index: list[tuple[str, str, str]]) -> tuple[set[str], set[str]]:
        """``(eval keys, dcd keys)`` from ``(key, source, language)`` triples."""
        pools: dict[tuple[str, str], list[str]] = defaultdict(list)
        for key, source, language in index:
            pools[(source, language)].append(key)
        eval_keys: set[str] = set()
        for language, size in sorted(self.eval_sizes.items()):
            per_source = _quotas(size, {s: 1 for s in self.eval_sources})
            for source, need in per_source.items():
                pool = sorted(pools.get((source, language), []))
                if len(pool) < need and self.strict:
                    raise ValueError(
                        f"evaluation set needs {need} {language!r} records from {source!r} but "
                        f"only {len(pool)} are left; lower eval_sizes or pass strict=False"
                    )
                eval_keys.update(self._rng("eval", source, language).sample(pool, min(need, len(pool))))
        train = [(key, source) for key, source, _ in index if key not in eval_keys]
        by_source: dict[str, list[str]] = defaultdict(list)
        for key, source in train:
            by_source[source].append(key)
        if self.dcd_size > len(train) and self.strict:
            raise ValueError(
                f"dcd_size={self.dcd_size} but only {len(train)} training records are left"
            )
        quotas = _quotas(min(self.dcd_size, len(train)), {s: len(k) for s, k in by_source.items()})
        dcd_keys: set[str] = set()
        for source, need in quotas.items():
            dcd_keys.update(self._rng("dcd", source).sample(sorted(by_source[source]), need))
        return eval_keys, dcd_keys

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield every record labelled with its split. Two passes when ``records`` allows it."""
        if iter(records) is records:  # a one-shot iterator: hold it; a JsonlRecords re-reads
            records = list(records)
        index = [(r.key, r.source, r.language) for r in records]
        keys = [k for k, _, _ in index]
        if len(set(keys)) != len(keys):
            dup = next(k for k, n in Counter(keys).items() if n > 1)
            raise ValueError(f"record key {dup!r} occurs more than once; splits need unique keys")
        eval_keys, dcd_keys = self.assign(index)
        for record in records:
            split = "eval" if record.key in eval_keys else "train"
            yield replace(record, metadata={**record.metadata, "split": split,
                                            "dcd": record.key in dcd_keys})


def write_splits(curated: Path, out_dir: Path) -> dict[str, Any]:
    """Write ``train.jsonl``, ``dcd.jsonl`` and ``eval_<lang>.jsonl`` under ``out_dir``.

    Returns ``{file stem: {"total", "by_source"}}`` for the summary.
    """
    files = {"train": lambda r: r.metadata.get("split") == "train",
             "dcd": lambda r: bool(r.metadata.get("dcd"))}
    languages = sorted({r.language for r in JsonlRecords(curated) if r.metadata.get("split") == "eval"})
    for lang in languages:
        files[f"eval_{lang}"] = lambda r, lang=lang: r.metadata.get("split") == "eval" and r.language == lang
    counts: dict[str, Any] = {}
    for stem, keep in files.items():
        by_source: Counter[str] = Counter()
        with atomic_open(Path(out_dir) / f"{stem}.jsonl") as f:
            for record in JsonlRecords(curated):
                if keep(record):
                    by_source[record.source] += 1
                    f.write(record.to_json() + "\n")
        counts[stem] = {"total": sum(by_source.values()), "by_source": dict(sorted(by_source.items()))}
    return counts
