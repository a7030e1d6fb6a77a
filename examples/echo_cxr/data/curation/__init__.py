"""ECHO's five-stage corpus curation, as composable stages behind one protocol.

1. :class:`ModalityFilter`: chest X-ray studies with clinical content only.
2. :class:`RuleStandardizer` (offline) or :class:`LLMStandardizer`: ``{findings, impression}``
   with every negative finding explicit.
3. :class:`SemanticDedup`: near-duplicates out, blockwise (bounded memory).
4. :class:`BilingualAugment`: a seeded half of the reports replaced by Chinese translations.
5. :class:`SplitAssigner`: balanced en/zh evaluation set and a source-proportional DCD subset.

:class:`Pipeline` runs readers and stages resumably, writing JSONL, rejects and a summary.
"""

from .base import JsonlRecords, Stage
from .dedup import (
    HashingEmbedder,
    MiniLMEmbedder,
    SemanticDedup,
    bundled_minilm_path,
    observation_signature,
)
from .modality import ModalityFilter
from .runner import AccountingError, Pipeline
from .splits import SplitAssigner, write_splits
from .standardize import LLMStandardizer, RuleStandardizer
from .translate import BilingualAugment

__all__ = [
    "AccountingError",
    "BilingualAugment",
    "HashingEmbedder",
    "JsonlRecords",
    "LLMStandardizer",
    "MiniLMEmbedder",
    "ModalityFilter",
    "Pipeline",
    "RuleStandardizer",
    "SemanticDedup",
    "SplitAssigner",
    "Stage",
    "bundled_minilm_path",
    "observation_signature",
    "write_splits",
]
