"""Report-generation metrics as torchmetrics ``Metric`` objects, usable for any text generation.

Every metric takes ``update(preds: list[str], target: list[str] | list[list[str]])`` (one or
several references per prediction), accumulates over batches, syncs across processes through
torchmetrics, and returns float64 tensors from ``compute()``.

- :class:`BLEU`: corpus BLEU-1..4 (dict), pycocoevalcap-exact.
- :class:`CIDErD`: CIDEr-D over the accumulated corpus, pycocoevalcap-exact.
- :class:`ROUGEL`: mean ROUGE-L (beta = 1.2), pycocoevalcap-exact.
- :class:`SemScore`: mean cosine of sentence embeddings (offline MiniLM by default).
- :class:`METEOR`: corpus METEOR 1.5 via coco-caption's jar (needs Java); English only.
- :class:`RepetitionRate`: share of n-grams repeated within each prediction (no reference).
- :class:`RaTEScore`: adapter for the ``ratescore`` package; raises if it or its models are missing.

The n-gram metrics share :func:`tokenize` (``lang="en"`` or ``"zh"``). See docs/metrics.md.
"""

from blockdistill.metrics.bleu import BLEU
from blockdistill.metrics.cider import CIDErD
from blockdistill.metrics.meteor import METEOR
from blockdistill.metrics.ratescore import RaTEScore
from blockdistill.metrics.repetition import RepetitionRate
from blockdistill.metrics.rouge import ROUGEL
from blockdistill.metrics.semscore import SemScore, SentenceEncoder, bundled_minilm_path
from blockdistill.metrics.text import LANGS, tokenize

__all__ = [
    "BLEU",
    "CIDErD",
    "LANGS",
    "METEOR",
    "ROUGEL",
    "RaTEScore",
    "RepetitionRate",
    "SemScore",
    "SentenceEncoder",
    "bundled_minilm_path",
    "tokenize",
]
