"""Stage 3: near-duplicates removed, distinct reports kept, memory bounded by the block size.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/echo_cxr/test_data_dedup.py -q
"""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pytest

from examples.echo_cxr.data.curation import (
    HashingEmbedder,
    MiniLMEmbedder,
    SemanticDedup,
    observation_signature,
)
from examples.echo_cxr.data.records import CXRRecord, Rejected


def corpus(n: int, seed: int = 0) -> list[CXRRecord]:
    rng = random.Random(seed)
    vocab = [f"term{i}" for i in range(3000)]
    return [CXRRecord(f"s{i}", "synthetic", findings=" ".join(rng.choices(vocab, k=25)))
            for i in range(n)]


def plant_duplicates(records: list[CXRRecord], every: int) -> list[CXRRecord]:
    """Append an edited copy (one word changed) of every ``every``-th record."""
    dups = []
    for r in records[::every]:
        words = r.findings.split()
        words[5] = "edited"
        dups.append(CXRRecord(f"dup-{r.study_id}", r.source, findings=" ".join(words)))
    return records + dups


def brute_force(emb: np.ndarray, threshold: float) -> list[int]:
    """Reference greedy dedup with the full n x n matrix."""
    sims = emb @ emb.T
    kept: list[int] = []
    for i in range(len(emb)):
        if not kept or sims[i, kept].max() < threshold:
            kept.append(i)
    return kept


def test_planted_near_duplicates_removed_distinct_kept() -> None:
    records = plant_duplicates(corpus(300), every=10)
    rejects: list[Rejected] = []
    kept = list(SemanticDedup(HashingEmbedder(), threshold=0.8, block_size=32).process(records, rejects.append))
    assert [r.study_id for r in kept] == [f"s{i}" for i in range(300)]
    assert sorted(r.key for r in rejects) == sorted(f"synthetic/dup-s{i}" for i in range(0, 300, 10))
    # The reason names the record it duplicates.
    assert all(f"near-duplicate of synthetic/{r.key.split('dup-')[1]}" in r.reason for r in rejects)


@pytest.mark.parametrize("block_size", [1, 7, 64, 1000])
def test_blockwise_equals_brute_force(block_size: int) -> None:
    """Guards against block boundaries changing decisions: same kept set at any block size."""
    records = plant_duplicates(corpus(150, seed=1), every=4)
    random.Random(2).shuffle(records)
    embedder = HashingEmbedder(dim=64)  # small width: many pairs near the threshold
    expected = brute_force(embedder([r.findings for r in records]), 0.5)
    kept = list(SemanticDedup(embedder, threshold=0.5, block_size=block_size).process(records, lambda r: None))
    assert [r.key for r in kept] == [records[i].key for i in expected]


class SeededEmbedder:
    """Cheap deterministic embedder: text ``"v<a>"`` is random unit vector a; ``"v<a>+<b>"`` is
    vector a nudged by a small vector b (a near-duplicate of ``"v<a>"``)."""

    dim = 32

    def params(self) -> dict:
        return {"embedder": "seeded"}

    def _vec(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            base, _, noise = text[1:].partition("+")
            v = self._vec(int(base)) + (0.05 * self._vec(10**6 + int(noise)) if noise else 0)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)


def test_memory_bounded_by_block_size() -> None:
    """A few thousand records, block 64: every similarity tile is at most 64 x 64, and peak
    traced memory stays far below one n x n float32 matrix."""
    records = [CXRRecord(f"s{i}", "synthetic", findings=f"v{i}") for i in range(4000)]
    records += [CXRRecord(f"d{i}", "synthetic", findings=f"v{i}+{i}") for i in range(0, 4000, 50)]
    random.Random(4).shuffle(records)
    n, block = len(records), 64
    shapes: list[tuple[int, int]] = []
    dedup = SemanticDedup(SeededEmbedder(), threshold=0.98, block_size=block,
                          on_similarity=shapes.append)
    rejects: list[Rejected] = []
    tracemalloc.start()
    kept = sum(1 for _ in dedup.process(records, rejects.append))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert kept == 4000 and len(rejects) == 80
    assert max(a for a, _ in shapes) <= block and max(b for _, b in shapes) <= block
    assert peak < n * n * 4 / 8, f"peak {peak} bytes vs n*n float32 = {n * n * 4}"


def test_group_keeps_clinically_different_reports_apart() -> None:
    a = CXRRecord("a", "iu_xray", findings="Lungs clear.", metadata={"observations": {"Lung Lesion": "negative"}})
    b = CXRRecord("b", "iu_xray", findings="Lungs clear.", metadata={"observations": {"Lung Lesion": "positive"}})
    c = CXRRecord("c", "iu_xray", findings="Lungs clear.", metadata={"observations": {"Lung Lesion": "negative"}})
    dedup = SemanticDedup(HashingEmbedder(), threshold=0.9, group=observation_signature, block_size=2)
    rejects: list[Rejected] = []
    assert [r.study_id for r in dedup.process([a, b, c], rejects.append)] == ["a", "b"]
    assert "near-duplicate of iu_xray/a" in rejects[0].reason


def test_minilm_paraphrase_is_duplicate_distinct_is_kept() -> None:
    """The offline MiniLM path on a few records: a paraphrase is caught, a different report kept."""
    texts = {
        "n1": "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax.",
        "n2": "Heart size is normal and the lungs are clear. There is no pleural effusion or pneumothorax.",
        "p1": "Large right pneumothorax with mediastinal shift to the left.",
        "p2": "Endotracheal tube 3 cm above the carina. Left lower lobe collapse.",
    }
    records = [CXRRecord(k, "synthetic", findings=v) for k, v in texts.items()]
    embedder = MiniLMEmbedder()
    emb = embedder(list(texts.values()))
    assert emb.shape == (4, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    rejects: list[Rejected] = []
    kept = list(SemanticDedup(embedder, threshold=0.9).process(records, rejects.append))
    assert [r.study_id for r in kept] == ["n1", "p1", "p2"]
    assert "near-duplicate of synthetic/n1" in rejects[0].reason


def test_bad_settings_rejected_early() -> None:
    with pytest.raises(ValueError, match="threshold=1.5"):
        SemanticDedup(HashingEmbedder(), threshold=1.5)
    with pytest.raises(ValueError, match="block_size=0"):
        SemanticDedup(HashingEmbedder(), block_size=0)
