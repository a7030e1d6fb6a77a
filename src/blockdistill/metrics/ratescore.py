"""Adapter for RaTEScore (entity-aware radiology report similarity, Zhao et al. 2024).

The real metric lives in the ``ratescore`` PyPI package (import name ``RaTEScore``), which
needs ``medspacy`` and two Hugging Face models on disk: the NER model
``Angelakeke/RaTE-NER-Deberta`` and the synonym encoder ``FremyCompany/BioLORD-2023-C``.
Nothing here downloads them; when any piece is missing the metric raises and says which.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from blockdistill.metrics.mean import SampleMean
from blockdistill.metrics.text import as_reference_lists

NER_MODEL_ID = "Angelakeke/RaTE-NER-Deberta"
SYNONYM_MODEL_ID = "FremyCompany/BioLORD-2023-C"


class PairScorer(Protocol):
    """What RaTEScore exposes: one score per (candidate, reference) pair."""

    def compute_score(
        self, candidate_list: list[str], reference_list: list[str]
    ) -> list[float]: ...

def _check_model_dir(path: str | Path | None, arg: str, model_id: str) -> str:
    """Return ``path`` as str if it is a local HF model directory, else raise naming what is missing."""
    if path is None:
        raise FileNotFoundError(
            f"RaTEScore needs a local copy of {model_id}: pass {arg}=<directory> "
            "(nothing is downloaded at run time)"
        )
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{arg}={str(path)!r} is not a local copy of {model_id}: "
            f"{'no config.json in it' if Path(path).is_dir() else 'the directory does not exist'}"
        )
    return str(path)

def load_ratescore(
    ner_model_path: str | Path | None,
    synonym_model_path: str | Path | None,
    affinity_matrix: str = "long",
    batch_size: int = 1,
    use_gpu: bool = False,
) -> PairScorer:
    """Build ``RaTEScore.RaTEScore`` from local model directories.

    Raises:
        FileNotFoundError: a model directory is not given or has no ``config.json``.
        ModuleNotFoundError: the ``ratescore`` package or one of its imports is missing.
    """
    ner = _check_model_dir(ner_model_path, "ner_model_path", NER_MODEL_ID)
    synonym = _check_model_dir(synonym_model_path, "synonym_model_path", SYNONYM_MODEL_ID)
    try:
        module = importlib.import_module("RaTEScore")
    except ModuleNotFoundError as err:
        missing = err.name or "RaTEScore"
        what = (
            "the 'ratescore' package (import name RaTEScore) is not installed: pip install ratescore"
            if missing.split(".")[0] == "RaTEScore"
            else f"the 'ratescore' package is installed but its dependency {missing!r} is not"
        )
        raise ModuleNotFoundError(f"RaTEScore is unavailable: {what}", name=missing) from err
    return module.RaTEScore(
        bert_model=ner,
        eval_model=synonym,
        batch_size=batch_size,
        use_gpu=use_gpu,
        affinity_matrix=affinity_matrix,
    )


class RaTEScore(SampleMean):
    """Mean RaTEScore over samples, computed by the ``ratescore`` package.

    Each (prediction, reference) pair is scored by ``RaTEScore.compute_score``; with several
    references the sample keeps its best score. ``compute`` returns the mean. There is no
    fallback: if the package or a model directory is missing, the constructor raises.

    Example:
        >>> metric = RaTEScore(ner_model_path="models/RaTE-NER-Deberta",
        ...                    synonym_model_path="models/BioLORD-2023-C")  # doctest: +SKIP
        >>> metric.update(["No pleural effusion."], ["There is no effusion."])  # doctest: +SKIP
        >>> metric.compute()  # doctest: +SKIP
    """

    def __init__(
        self,
        ner_model_path: str | Path | None = None,
        synonym_model_path: str | Path | None = None,
        affinity_matrix: str = "long",
        batch_size: int = 1,
        use_gpu: bool = False,
        scorer: PairScorer | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            ner_model_path: local directory of Angelakeke/RaTE-NER-Deberta.
            synonym_model_path: local directory of FremyCompany/BioLORD-2023-C.
            affinity_matrix: RaTEScore's entity-type weights, ``"long"`` or ``"short"`` or a
                JSON path.
            batch_size: NER batch size inside RaTEScore.
            use_gpu: run RaTEScore's models on CUDA.
            scorer: an already built ``RaTEScore.RaTEScore`` (shares one loaded model between
                metrics); when given, the path arguments are ignored.
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        super().__init__(**kwargs)
        if scorer is None:
            scorer = load_ratescore(
                ner_model_path, synonym_model_path, affinity_matrix, batch_size, use_gpu
            )
        elif not callable(getattr(scorer, "compute_score", None)):
            raise TypeError(
                f"scorer must have compute_score(candidates, references), got {scorer!r}"
            )
        self._scorer = (scorer,)  # a tuple keeps its models out of the module tree

    def update(self, preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]]) -> None:
        """Add N predictions, each with one reference (str) or several (list of str)."""
        refs = as_reference_lists(preds, target)
        cands = [p for p, group in zip(preds, refs) for _ in group]
        flat_refs = [r for group in refs for r in group]
        scores = list(self._scorer[0].compute_score(cands, flat_refs))
        if len(scores) != len(cands):
            raise RuntimeError(f"RaTEScore returned {len(scores)} scores for {len(cands)} pairs")
        total, start = 0.0, 0
        for group in refs:
            total += max(float(s) for s in scores[start : start + len(group)])
            start += len(group)
        self.add_scores(total, len(refs))
