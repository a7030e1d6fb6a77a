"""Fixtures shared by the metric tests: real IU X-ray report pairs and one loaded MiniLM."""

from __future__ import annotations

import os

import pytest

# Nothing in these tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def iu_pairs() -> tuple[list[str], list[list[str]]]:
    """200 real findings, each with the findings of its most similar other report."""
    from iu_xray_corpus import related_pairs

    return related_pairs(200, 1)


@pytest.fixture(scope="session")
def iu_pairs_multi() -> tuple[list[str], list[list[str]]]:
    """200 real findings, each with the findings of its 3 most similar other reports."""
    from iu_xray_corpus import related_pairs

    return related_pairs(200, 3)


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2, loaded once for every SemScore test."""
    from blockdistill.metrics import SentenceEncoder, bundled_minilm_path

    return SentenceEncoder(bundled_minilm_path())
