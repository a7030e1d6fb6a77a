"""Tokenization shared by BLEU, CIDEr-D and ROUGE-L, and the update() input checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockdistill.metrics import BLEU, ROUGEL, CIDErD, tokenize
from blockdistill.metrics.text import as_reference_lists


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("No pleural effusion.", ["no", "pleural", "effusion"]),
        ("Heart size normal; lungs clear!", ["heart", "size", "normal", "lungs", "clear"]),
        ("Normal chest x-XXXX.", ["normal", "chest", "x-xxxx"]),
        ("A 3.5 cm nodule (right), 2.0cm", ["a", "3.5", "cm", "nodule", "right", "2.0", "cm"]),
        ('T12-L1 and/or "mild" -- 50%', ["t12-l1", "and/or", "mild", "50", "%"]),
        ("patient's heart...", ["patient's", "heart"]),
        ("", []),
        ("  .,;:!? ", []),
    ],
)
def test_english_rule(text: str, tokens: list[str]) -> None:
    """Guards the documented English rule (lower-case, punctuation split off and dropped)."""
    assert tokenize(text, "en") == tokens


def test_chinese_is_per_character() -> None:
    """Each CJK ideograph is a token; Latin words and numbers stay whole; punctuation goes."""
    assert tokenize("双肺纹理清晰，心影不大。X线 3.5cm", "zh") == [
        "双", "肺", "纹", "理", "清", "晰", "心", "影", "不", "大", "x", "线", "3.5", "cm",
    ]  # fmt: skip
    # Under "en" a CJK run is one word: the language choice matters.
    assert tokenize("心影不大", "en") == ["心影不大"]


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(ValueError, match="lang='fr'"):
        tokenize("bonjour", "fr")
    with pytest.raises(ValueError, match="lang='de'"):
        BLEU(lang="de")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["en", "zh"]))
def test_tokenize_is_idempotent(text: str, lang: str) -> None:
    """Re-tokenizing space-joined tokens changes nothing, so pycocoevalcap (which takes
    pre-tokenized text) and our metrics (which tokenize raw text) see the same tokens."""
    tokens = tokenize(text, lang)
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    assert tokenize(" ".join(tokens), lang) == tokens


def test_reference_lists() -> None:
    assert as_reference_lists(["a", "b"], ["x", ["y", "z"]]) == [["x"], ["y", "z"]]


@pytest.mark.parametrize("metric_cls", [BLEU, CIDErD, ROUGEL])
@pytest.mark.parametrize(
    ("preds", "target", "error", "match"),
    [
        ("a report", ["x"], TypeError, "preds must be a list of str"),
        (["a"], "x", TypeError, "target must be a list"),
        (["a", "b"], ["x"], ValueError, "preds has 2 reports but target has 1"),
        (["a"], [[]], ValueError, r"target\[0\] must be a str or a non-empty list"),
        (["a"], [[3]], ValueError, r"target\[0\]"),
    ],
)
def test_bad_inputs_are_named(metric_cls, preds, target, error, match) -> None:
    """A bare string is a list of characters to Python; it must not be scored as such."""
    with pytest.raises(error, match=match):
        metric_cls().update(preds, target)
