"""Shared text handling for the n-gram metrics: one tokenizer and one input check.

Every n-gram metric (BLEU, CIDEr-D, ROUGE-L) tokenizes with :func:`tokenize`, so a
report is split into the same tokens whichever metric scores it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

LANGS = ("en", "zh")

# One token is, in order of preference:
#   - a decimal number such as "3.5" or "1.2.3" (kept whole, as the PTB tokenizer does);
#   - a word of letters/digits with internal "-", "'" or "/" ("x-ray", "t12-l1", "and/or");
#   - any other single non-space, non-word character (punctuation or a symbol).
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)+|[^\W_]+(?:[-'/][^\W_]+)*|[^\w\s]")

# CJK ideographs (unified, extension A, compatibility, extension B-F). Under lang="zh"
# each one becomes its own token.
_CJK_RE = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef])")

# Punctuation characters that still count as content: coco's PTB post-processing keeps
# "%", "&", "#", "@", "*" and "/" (it removes only quotes, brackets, dashes and . , ; : ? !).
_KEPT_PUNCT = frozenset("%&#@*/\\")


def _is_punctuation(token: str) -> bool:
    """True when every character is Unicode punctuation (category P*) outside _KEPT_PUNCT."""
    return all(unicodedata.category(ch).startswith("P") and ch not in _KEPT_PUNCT for ch in token)


def tokenize(text: str, lang: str = "en") -> list[str]:
    """Split a report into lower-case tokens for n-gram metrics.

    The rule, meant to follow the coco-caption PTB tokenizer in spirit (that one needs Java):

    1. NFKC-normalise and lower-case (full-width "，" becomes ",", "Ｘ" becomes "x").
    2. ``lang="zh"``: put spaces around every CJK ideograph, so each is one token.
       Latin words and numbers inside Chinese text stay whole.
    3. Find tokens left to right: decimal numbers (``3.5``), words with internal
       ``-``, ``'`` or ``/`` (``x-ray``, ``patient's``, ``and/or``), else one character.
       ``_`` is dropped.
    4. Drop tokens made only of punctuation (Unicode category P*), keeping
       ``% & # @ * / \\``; coco drops quotes, brackets, dashes and ``. , ; : ? !`` likewise.

    Invariant: ``tokenize(" ".join(tokenize(t, lang)), lang) == tokenize(t, lang)``, so
    text that is already tokenized and space-joined (what pycocoevalcap takes) is unchanged.

    Args:
        text: one report.
        lang: ``"en"`` or ``"zh"``.

    Returns:
        The tokens, none of them empty or containing whitespace.
    """
    if lang not in LANGS:
        raise ValueError(f"lang={lang!r} is not supported; expected one of {LANGS}")
    if not isinstance(text, str):
        raise TypeError(f"expected a report as str, got {type(text).__name__}: {text!r}")
    text = unicodedata.normalize("NFKC", text).lower()
    if lang == "zh":
        text = _CJK_RE.sub(r" \1 ", text)
    return [tok for tok in _TOKEN_RE.findall(text) if not _is_punctuation(tok)]


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of every 1..n-gram of ``tokens`` (keys are tuples of 1..n tokens)."""
    return Counter(
        tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1)
    )


def as_reference_lists(
    preds: Sequence[str], target: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    """Check a metric's ``update`` inputs and give each prediction its list of references.

    Args:
        preds: N generated reports.
        target: N references, each one report (str) or a non-empty list of reports.

    Returns:
        N lists of reference reports (length >= 1 each).
    """
    if isinstance(preds, str) or not all(isinstance(p, str) for p in preds):
        raise TypeError(f"preds must be a list of str, got {_describe(preds)}")
    if isinstance(target, str):
        raise TypeError(f"target must be a list of str or of lists of str, got {_describe(target)}")
    if len(preds) != len(target):
        raise ValueError(
            f"preds has {len(preds)} reports but target has {len(target)}; expected one "
            "reference (or list of references) per prediction"
        )
    refs: list[list[str]] = []
    for i, t in enumerate(target):
        group = [t] if isinstance(t, str) else list(t)
        if not group or not all(isinstance(r, str) for r in group):
            raise ValueError(
                f"target[{i}] must be a str or a non-empty list of str, got {_describe(t)}"
            )
        refs.append(group)
    return refs


def _describe(value: object) -> str:
    """Short description of a bad input for error messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"
