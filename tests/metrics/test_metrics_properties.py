"""Properties of the n-gram metrics: maxima, batch invariance, Chinese, torchmetrics plumbing."""

from __future__ import annotations

import pytest
import torch

from blockdistill.metrics import BLEU, ROUGEL, CIDErD


def _scores(preds, targets, lang: str = "en", batches: int = 1) -> dict[str, float]:
    """All n-gram scores, feeding the corpus in ``batches`` uneven consecutive chunks."""
    bleu, cider, rouge = BLEU(lang=lang), CIDErD(lang=lang), ROUGEL(lang=lang)
    n = len(preds)
    cuts = [0, *sorted({(n * k * k) // (batches * batches) for k in range(1, batches)}), n]
    for lo, hi in zip(cuts, cuts[1:]):
        for m in (bleu, cider, rouge):
            m.update(preds[lo:hi], targets[lo:hi])
    out = {k: v.item() for k, v in bleu.compute().items()}
    return {**out, "cider": cider.compute().item(), "rouge_l": rouge.compute().item()}


def test_identical_reports_score_the_maximum(iu_pairs) -> None:
    """BLEU-1..4 = 1 and ROUGE-L = 1 for copies; CIDEr-D = 10 (every report has >= 4 tokens
    and, at each order, an n-gram that not all 200 samples share)."""
    preds, _ = iu_pairs
    scores = _scores(preds, preds)
    for k in range(1, 5):
        assert scores[f"bleu_{k}"] == pytest.approx(1.0, abs=1e-9)  # 1e-15/1e-9 smoothing
    assert scores["rouge_l"] == 1.0
    assert scores["cider"] == pytest.approx(10.0, abs=1e-9)


def test_cider_max_needs_a_corpus() -> None:
    """One sample: every n-gram has df = N, so idf = 0 and CIDEr-D is 0 even for a copy."""
    cider = CIDErD()
    cider.update(["the heart is normal in size"], ["the heart is normal in size"])
    assert cider.compute().item() == 0.0


def test_better_hypothesis_scores_higher(iu_pairs) -> None:
    """A related report beats an unrelated one on every metric (catches swapped pred/target
    or inverted scores that parity on a single corpus could miss)."""
    preds, targets = iu_pairs
    related = _scores(preds, targets)
    shuffled = _scores(preds, [targets[(i + 97) % len(targets)] for i in range(len(targets))])
    for key, value in related.items():
        assert value > shuffled[key], key


@pytest.mark.parametrize("pairs", ["iu_pairs", "iu_pairs_multi"])
def test_batch_splitting_invariance(pairs: str, request: pytest.FixtureRequest) -> None:
    """One batch and five uneven batches give the same corpus scores (CIDEr-D's df must be
    taken over all batches, BLEU's counts must be summed, not its per-batch scores)."""
    preds, targets = request.getfixturevalue(pairs)
    one, five = _scores(preds, targets, batches=1), _scores(preds, targets, batches=5)
    for key in one:
        assert five[key] == pytest.approx(one[key], abs=1e-12, rel=0), key


def test_batch_mean_differs_from_corpus_value(iu_pairs) -> None:
    """Control for the test above: averaging per-batch values (the bug it guards against)
    does change BLEU and CIDEr-D on this corpus, so the invariance is not vacuous."""
    preds, targets = iu_pairs
    corpus = _scores(preds, targets)
    halves = [_scores(preds[s], targets[s]) for s in (slice(0, 40), slice(40, None))]
    for key in ("bleu_4", "cider"):
        assert abs((halves[0][key] + halves[1][key]) / 2 - corpus[key]) > 1e-4, key


def test_chinese_identical_and_different() -> None:
    """lang="zh": copies reach the maximum, a different finding scores lower."""
    refs = ["双肺纹理清晰，心影不大。", "右下肺见片状阴影，考虑炎症。", "胸椎退行性改变。"]
    same = _scores(refs, refs, lang="zh")
    diff = _scores(
        ["双肺纹理增多，心影增大。", "右下肺见片状阴影。", "胸椎未见异常。"], refs, lang="zh"
    )
    assert same["bleu_4"] == pytest.approx(1.0, abs=1e-9) and same["rouge_l"] == 1.0
    assert same["cider"] == pytest.approx(10.0, abs=1e-9)
    for key in same:
        assert 0 < diff[key] < same[key], key
    # Per-character tokens make "心影不大" vs "心影增大" a partial match, not a miss.
    rouge = ROUGEL(lang="zh")
    rouge.update(["心影增大"], ["心影不大"])
    assert rouge.compute().item() == pytest.approx(0.75)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_forward_returns_batch_value_and_accumulates(iu_pairs) -> None:
    """torchmetrics' forward() merges list states (CIDEr-D) and sum states (BLEU) correctly."""
    preds, targets = iu_pairs
    cider, bleu = CIDErD(), BLEU()
    first = cider(preds[:60], targets[:60])
    bleu(preds[:60], targets[:60])
    ref = CIDErD()
    ref.update(preds[:60], targets[:60])
    assert first.item() == ref.compute().item()
    cider(preds[60:], targets[60:])
    bleu(preds[60:], targets[60:])
    whole = _scores(preds, targets)
    assert cider.compute().item() == pytest.approx(whole["cider"], abs=1e-12)
    assert bleu.compute()["bleu_4"].item() == pytest.approx(whole["bleu_4"], abs=1e-12)
    cider.reset()
    assert cider.compute().item() == 0.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_state_dict_round_trip(iu_pairs) -> None:
    """Accumulated CIDEr-D state survives a checkpoint (byte-tensor list state)."""
    preds, targets = iu_pairs
    cider = CIDErD()
    cider.persistent(True)
    cider.update(preds[:50], targets[:50])
    restored = CIDErD()
    restored.persistent(True)
    restored.load_state_dict(cider.state_dict())
    assert restored.compute().item() == cider.compute().item() > 0
    assert all(t.dtype == torch.uint8 for t in cider.records)
