"""METEOR 1.5 through coco-caption's Java jar (pycocoevalcap), the number captioning papers quote.

There is no pure-Python METEOR here: nltk's needs WordNet data that cannot be fetched
offline, and its numbers differ from the jar's. pycocoevalcap ships ``meteor-1.5.jar`` and
its English paraphrase table; the jar needs a Java runtime on ``PATH``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from blockdistill.metrics.string_state import TokenizedPairs


def meteor_jar() -> Path:
    """Path of pycocoevalcap's ``meteor-1.5.jar``, after checking Java and the jar exist.

    Raises:
        ModuleNotFoundError: pycocoevalcap is not installed.
        FileNotFoundError: no ``java`` on PATH, or the jar / paraphrase table is missing.
    """
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "METEOR runs coco-caption's jar from the 'pycocoevalcap' package, which is not "
            "installed (pip install pycocoevalcap)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "meteor"
    for needed in (folder / "meteor-1.5.jar", folder / "data" / "paraphrase-en.gz"):
        if not needed.is_file():
            raise FileNotFoundError(f"METEOR needs {needed}, which pycocoevalcap did not install")
    if shutil.which("java") is None:
        raise FileNotFoundError(
            "METEOR needs a Java runtime: no 'java' on PATH (e.g. apt-get install default-jre)"
        )
    return folder / "meteor-1.5.jar"


class METEOR(TokenizedPairs):
    """Corpus METEOR 1.5 (English, ``-norm``), computed by coco-caption's jar at ``compute``.

    Reports are tokenized with :func:`blockdistill.metrics.text.tokenize` (as for the n-gram
    metrics) and handed to pycocoevalcap's ``Meteor`` wrapper. The result is the jar's
    aggregate corpus score (from summed statistics, what coco-caption reports), not a mean
    of per-report scores. Several references per prediction are supported.

    ``compute`` starts one JVM (about 8 s to load the paraphrase table, up to 2 GB of memory)
    on every process that calls it. Java and the jar are checked at construction, so a
    missing runtime fails early rather than after an evaluation.

    Example:
        >>> metric = METEOR()
        >>> metric.update(["no pleural effusion or pneumothorax"],
        ...               ["no pleural effusion or pneumothorax"])
        >>> metric.compute().item()
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        """
        Args:
            **kwargs: passed to :class:`torchmetrics.Metric`.
        """
        meteor_jar()  # fail before any data is seen
        super().__init__(**kwargs)

    def compute(self) -> Tensor:
        """Corpus METEOR, a float64 scalar in [0, 1]; 0 for an empty corpus."""
        from pycocoevalcap.meteor.meteor import Meteor

        res, gts = {}, {}
        for i, (hyp, refs) in enumerate(self.pairs()):
            res[i], gts[i] = [hyp], refs
        if not res:
            return torch.tensor(0.0, dtype=torch.float64)
        scorer = Meteor()  # starts the JVM; its __del__ stops it when this frame returns
        try:
            score, _ = scorer.compute_score(gts, res)
        except ValueError as err:  # the jar died or printed something that is not a number
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
            stderr = scorer.meteor_p.stderr.read().decode(errors="replace")[-2000:]
            scorer.lock.release()  # compute_score raised while holding it; __del__ needs it
            raise RuntimeError(f"the METEOR jar returned no score; its stderr: {stderr}") from err
        return torch.tensor(score, dtype=torch.float64)
