"""Evaluate variants side by side: generate, score per group, aggregate speed, write results.

Example::

    from blockdistill.evaluation import SamplerConfig, TextMetrics, Variant, evaluate_variants

    variants = [Variant("ar", ar_bd, SamplerConfig("ar")),
                Variant("base_multistep_L8", base_bd, SamplerConfig("block", "threshold", {"tau": 0.85})),
                Variant("echo_onestep_L8", echo_bd, SamplerConfig("block", "one_step"))]
    report = evaluate_variants(variants, test_split, tokenizer, metrics=TextMetrics(semscore=True))
    report.write("runs/eval")          # results.json + results.md
    report.rows                        # one dict per (variant, language[, source])

Rows: for each variant and language, one row (``group = "lang"``) over all its examples; when a
language's examples come from two or more sources, one more row per source
(``group = "lang/source"``, ``source`` set) and the language row gets ``source = "all"``.
Each row holds ``n``, BLEU-1..4, ROUGE-L, CIDEr-D, SemScore when enabled, every extra scorer's
keys, and the group's decoding statistics (:meth:`RunStats.summary`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockdistill.evaluation.generate import (
    Prediction,
    SplitOutput,
    default_lang,
    default_source,
    generate_split,
)
from blockdistill.evaluation.report import atomic_write_text, markdown_table, write_json
from blockdistill.evaluation.sampler import Variant
from blockdistill.evaluation.scoring import Scorer, TextMetrics, score_group
from blockdistill.evaluation.stats import RunStats

__all__ = ["EvalReport", "VariantResult", "build_rows", "evaluate_variant", "evaluate_variants"]


@dataclass
class VariantResult:
    """Everything one variant produced on the split."""

    name: str
    description: dict[str, Any]
    """Sampler settings and block size (:meth:`Variant.describe`)."""
    predictions: list[Prediction]
    """One per example, in split order."""
    rows: list[dict[str, Any]]
    """Result rows, one per group (see the module docstring)."""
    stats: RunStats
    """Decoding statistics of the whole run (all groups)."""

    def summary(self) -> dict[str, Any]:
        """Settings plus the whole run's statistics (JSON-ready)."""
        return {**self.description, "stats": self.stats.summary()}


def _merged(stats: Iterable[RunStats]) -> RunStats:
    total = RunStats()
    for s in stats:
        total = total.merge(s)
    return total


def build_rows(name: str, out: SplitOutput, metrics: TextMetrics, scorers: Mapping[str, Scorer] | None = None,
               extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Result rows of one variant's :class:`SplitOutput` (languages sorted; per-source rows after
    their language row)."""
    rows = []
    for lang in sorted({p.lang for p in out.predictions}):
        items = [p for p in out.predictions if p.lang == lang]
        sources = sorted({p.source for p in items if p.source is not None})
        groups: list[tuple[str, str | None, list[Prediction]]] = [
            ("lang", "all" if len(sources) >= 2 else (sources[0] if sources else None), items)]
        if len(sources) >= 2:
            groups += [("lang/source", s, [p for p in items if p.source == s]) for s in sources]
        for group, source, ps in groups:
            keys = {(p.lang, p.source) for p in ps}
            row: dict[str, Any] = {"variant": name, "lang": lang, "source": source, "group": group, "n": len(ps)}
            row.update(score_group([p.prediction for p in ps], [p.references for p in ps], [p.meta for p in ps],
                                   lang, metrics, scorers))
            row.update(_merged(s for k, s in out.stats.items() if k in keys).summary())
            row.update(extra or {})
            rows.append(row)
    return rows


def evaluate_variant(
    variant: Variant,
    examples: Iterable[Mapping[str, Any]],
    tokenizer: Any,
    *,
    metrics: TextMetrics | None = None,
    scorers: Mapping[str, Scorer] | None = None,
    batch_size: int = 8,
    lang_of: Callable[[Mapping[str, Any]], str] = default_lang,
    source_of: Callable[[Mapping[str, Any]], str | None] = default_source,
    warmup: int = 0,
    progress: bool = True,
) -> VariantResult:
    """Generate ``examples`` with ``variant`` and score every group.

    Args:
        variant: model + sampler.
        examples: collator-style example dicts (see :func:`generate_split`).
        tokenizer: decodes generated ids and ``response_ids`` references.
        metrics: the text metrics; default ``TextMetrics()`` (no SemScore).
        scorers: extra scorers by name, each ``(preds, refs, metas) -> dict[str, float]``.
        batch_size, lang_of, source_of, warmup, progress: see :func:`generate_split`.
    """
    metrics = metrics if metrics is not None else TextMetrics()
    out = generate_split(variant, examples, tokenizer, batch_size=batch_size, lang_of=lang_of,
                         source_of=source_of, warmup=warmup, progress=progress)
    if not out.predictions:
        raise ValueError(f"variant {variant.name!r}: the evaluation split is empty; expected at least one example")
    desc = variant.describe()
    rows = build_rows(variant.name, out, metrics, scorers, {"sampler": desc["label"], "block_size": desc["block_size"]})
    return VariantResult(variant.name, desc, out.predictions, rows, _merged(out.stats.values()))


@dataclass
class EvalReport:
    """Results of several variants on one split."""

    results: list[VariantResult]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every variant's rows, variants in evaluation order."""
        return [r for res in self.results for r in res.rows]

    def result(self, name: str) -> VariantResult:
        for res in self.results:
            if res.name == name:
                return res
        raise KeyError(f"no variant named {name!r}; have {[r.name for r in self.results]}")

    def side_by_side(self, k: int = 3) -> list[dict[str, Any]]:
        """The first ``k`` examples of each language: reference next to every variant's text."""
        if not self.results:
            return []
        first = self.results[0].predictions
        out = []
        for lang in sorted({p.lang for p in first}):
            for p in [p for p in first if p.lang == lang][:k]:
                out.append({"index": p.index, "lang": lang, "source": p.source, "reference": p.references[0],
                            "predictions": {res.name: res.predictions[p.index].prediction for res in self.results}})
        return out

    def to_dict(self, include_predictions: bool = True, samples: int = 3) -> dict[str, Any]:
        """JSON-ready: ``rows``, ``variants`` (settings and whole-run statistics), ``samples``
        (side by side) and, when asked, every ``predictions`` per variant."""
        d: dict[str, Any] = {"rows": self.rows, "variants": [res.summary() for res in self.results],
                             "samples": self.side_by_side(samples)}
        if include_predictions:
            d["predictions"] = {res.name: [p.as_dict() for p in res.predictions] for res in self.results}
        return d

    def markdown(self, columns: Sequence[str] | None = None, digits: int = 4) -> str:
        """Markdown table of :attr:`rows` (see :func:`~blockdistill.evaluation.report.markdown_table`)."""
        return markdown_table(self.rows, columns, digits)

    def write(self, out_dir: str | os.PathLike, stem: str = "results", include_predictions: bool = True,
              columns: Sequence[str] | None = None) -> dict[str, Path]:
        """Atomically write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        return {"json": write_json(out / f"{stem}.json", self.to_dict(include_predictions)),
                "markdown": atomic_write_text(out / f"{stem}.md", self.markdown(columns))}


def evaluate_variants(
    variants: Sequence[Variant],
    examples: Iterable[Mapping[str, Any]],
    tokenizer: Any,
    *,
    metrics: TextMetrics | None = None,
    scorers: Mapping[str, Scorer] | None = None,
    batch_size: int = 8,
    lang_of: Callable[[Mapping[str, Any]], str] = default_lang,
    source_of: Callable[[Mapping[str, Any]], str | None] = default_source,
    warmup: int = 0,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
) -> EvalReport:
    """:func:`evaluate_variant` for each variant on the same split (read once per variant, so
    ``examples`` must be re-iterable: a list or a ``Dataset``, not a generator).

    Writes ``results.json`` and ``results.md`` into ``out_dir`` when given.
    """
    names = [v.name for v in variants]
    if not variants:
        raise ValueError("no variants to evaluate; expected at least one")
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    if iter(examples) is examples:
        raise TypeError("examples is a one-shot iterator; pass a list or a Dataset (each variant reads it again)")
    metrics = metrics if metrics is not None else TextMetrics()
    report = EvalReport([evaluate_variant(v, examples, tokenizer, metrics=metrics, scorers=scorers,
                                          batch_size=batch_size, lang_of=lang_of, source_of=source_of,
                                          warmup=warmup, progress=progress) for v in variants])
    if out_dir is not None:
        report.write(out_dir)
    return report
