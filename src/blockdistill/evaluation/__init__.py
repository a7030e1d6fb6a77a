"""Evaluation runner: generate a split with several variants, score it, measure speed, report.

A :class:`Variant` is a model plus a :class:`SamplerConfig` (AR, or block decoding with a
policy and a cache mode). :func:`evaluate_variants` decodes the split with each one (batched,
batches never mixing languages or sources), decodes ids to text, scores every language (and
source) with BLEU-1..4, ROUGE-L, CIDEr-D, optional SemScore and any extra scorers, aggregates
NFE / TPF / tokens/s, and writes ``results.json`` + ``results.md`` atomically. No domain
knowledge lives here. :mod:`~blockdistill.evaluation.speed` measures tokens/s side by side and the
forward-cost limit on a speed-up; see ``examples/echo_cxr/evaluate.py`` for the chest X-ray wiring and
docs/evaluation.md for the definitions.
"""

from blockdistill.evaluation.generate import (
    GroupKey,
    Prediction,
    SplitOutput,
    default_lang,
    default_source,
    generate_split,
)
from blockdistill.evaluation.report import (
    atomic_write_text,
    default_columns,
    markdown_table,
    write_json,
)
from blockdistill.evaluation.runner import (
    EvalReport,
    VariantResult,
    build_rows,
    evaluate_variant,
    evaluate_variants,
)
from blockdistill.evaluation.sampler import SAMPLER_KINDS, SamplerConfig, Variant
from blockdistill.evaluation.scoring import Scorer, TextMetrics, metric_lang, score_group
from blockdistill.evaluation.speed import forward_cost_limit, forward_cost_sizes, measure_speed
from blockdistill.evaluation.stats import RunStats
from blockdistill.evaluation.text import decode_ids

__all__ = [
    "SAMPLER_KINDS",
    "EvalReport",
    "GroupKey",
    "Prediction",
    "RunStats",
    "SamplerConfig",
    "Scorer",
    "SplitOutput",
    "TextMetrics",
    "Variant",
    "VariantResult",
    "atomic_write_text",
    "build_rows",
    "decode_ids",
    "default_columns",
    "default_lang",
    "default_source",
    "evaluate_variant",
    "evaluate_variants",
    "forward_cost_limit",
    "forward_cost_sizes",
    "generate_split",
    "markdown_table",
    "measure_speed",
    "metric_lang",
    "score_group",
    "write_json",
]
