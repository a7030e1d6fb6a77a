"""RepetitionRate against hand counts and a brute-force reference; batching and languages."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockdistill.evaluation import TextMetrics
from blockdistill.metrics import RepetitionRate
from blockdistill.metrics.repetition import repetition_counts
from blockdistill.metrics.text import tokenize


def _rate(texts, n=4, lang="en"):
    m = RepetitionRate(n=n, lang=lang)
    m.update(texts)
    return m.compute().item()


def test_hand_counts():
    # 4-grams of "a b c d a b c d": abcd bcda cdab dabc abcd -> 5, one repeats an earlier one
    assert repetition_counts("a b c d a b c d".split(), 4) == (1, 5)
    assert repetition_counts(["x"] * 5, 1) == (4, 5)
    assert repetition_counts(["no", "effusion"], 4) == (0, 0)
    with pytest.raises(ValueError):
        repetition_counts(["a"], 0)
    # pooled, not averaged per report: (1 + 0) / (5 + 1)
    assert _rate(["a b c d a b c d", "e f g h"]) == pytest.approx(1 / 6)
    # case and punctuation do not count
    assert _rate(["A, b. c d; a B c D"]) == pytest.approx(1 / 5)
    assert _rate([]) == 0.0 and _rate(["too short"]) == 0.0


def test_chinese_is_counted_per_character():
    # "印象右侧右侧积液": characters 印 象 右 侧 右 侧 积 液; bigrams: 7, (右, 侧) repeats once
    assert _rate(["印象右侧右侧积液"], n=2, lang="zh") == pytest.approx(1 / 7)
    # under "en" the run of Han characters is one word: no bigram at all
    assert _rate(["印象右侧右侧积液"], n=2, lang="en") == 0.0
    # "左上左上肺野密度增高" at n=4: 10 characters, 7 four-grams, none repeats
    assert _rate(["左上左上肺野密度增高"], n=4, lang="zh") == 0.0
    assert _rate(["左上左上肺野密度增高"], n=2, lang="zh") == pytest.approx(1 / 9)


def _brute(texts, n, lang):
    rep = tot = 0
    for t in texts:
        toks = tokenize(t, lang)
        for i in range(len(toks) - n + 1):
            tot += 1
            gram = toks[i : i + n]
            rep += any(toks[j : j + n] == gram for j in range(i))
    return rep / tot if tot else 0.0


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.lists(st.sampled_from(["no", "left", "effusion", "右", "侧", "."]), max_size=14)
                      .map(" ".join), max_size=5),
       n=st.integers(1, 4), lang=st.sampled_from(["en", "zh"]), split=st.integers(0, 5))
def test_equals_brute_force_and_batches_merge(texts, n, lang, split):
    whole = RepetitionRate(n=n, lang=lang)
    whole.update(texts)
    assert whole.compute().item() == pytest.approx(_brute(texts, n, lang), abs=1e-12)
    parts = RepetitionRate(n=n, lang=lang)
    parts.update(texts[:split])
    parts.update(texts[split:])
    assert torch.equal(parts.compute(), whole.compute())


def test_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        RepetitionRate(n=0)
    with pytest.raises(ValueError, match="lang"):
        RepetitionRate(lang="fr")
    with pytest.raises(TypeError, match="list of reports"):
        RepetitionRate().update("one report")


def test_text_metrics_report_it_in_the_group_language():
    preds, refs = ["印象右侧右侧积液"], [["印象右侧积液"]]
    assert TextMetrics(repetition_n=2)(preds, refs, "zh")["repetition_rate"] == pytest.approx(1 / 7)
    assert TextMetrics(repetition_n=2)(preds, refs, "en")["repetition_rate"] == 0.0
    assert "repetition_rate" not in TextMetrics(repetition_n=None)(preds, refs, "en")
    with pytest.raises(ValueError, match="repetition_n"):
        TextMetrics(repetition_n=0)
