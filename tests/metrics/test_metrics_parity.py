"""BLEU-1..4, CIDEr-D and ROUGE-L agree with pycocoevalcap, the coco-caption reference code.

pycocoevalcap is run directly on the same tokens: our metrics get the raw reports and
tokenize them; pycocoevalcap gets ``" ".join(tokenize(report))`` (its own PTB tokenizer
needs Java and would tokenize differently).
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

# The reference is in the `echo` extra that `make test` installs: a missing package fails here
# loudly instead of skipping the parity checks.
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from blockdistill.metrics import BLEU, ROUGEL, CIDErD, tokenize

TOL = 1e-9  # measured deviations are ~1e-16 (float summation order); see docs/metrics.md


def coco_scores(preds: list[str], targets: list[list[str]], lang: str = "en") -> dict[str, float]:
    """pycocoevalcap's corpus scores on our tokenization."""
    res = {i: [" ".join(tokenize(p, lang))] for i, p in enumerate(preds)}
    gts = {i: [" ".join(tokenize(r, lang)) for r in refs] for i, refs in enumerate(targets)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {**{f"bleu_{k + 1}": b for k, b in enumerate(bleu)}, "cider": cider, "rouge_l": rouge}


def our_scores(preds: list[str], targets: list[list[str]], lang: str = "en") -> dict[str, float]:
    bleu, cider, rouge = BLEU(lang=lang), CIDErD(lang=lang), ROUGEL(lang=lang)
    for m in (bleu, cider, rouge):
        m.update(preds, targets)
    out = {k: v.item() for k, v in bleu.compute().items()}
    return {**out, "cider": cider.compute().item(), "rouge_l": rouge.compute().item()}


@pytest.mark.parametrize("pairs", ["iu_pairs", "iu_pairs_multi"])
def test_parity_on_iu_xray_reports(pairs: str, request: pytest.FixtureRequest) -> None:
    """200 real findings against related (not identical) real findings, 1 or 3 references."""
    preds, targets = request.getfixturevalue(pairs)
    ours, ref = our_scores(preds, targets), coco_scores(preds, targets)
    assert ours.keys() == ref.keys()
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=TOL, rel=0), key
    # Non-trivial corpus: scores far from both 0 and their maximum.
    assert 0.2 < ours["bleu_4"] < 0.8 and 0.3 < ours["rouge_l"] < 0.9 and 0.5 < ours["cider"] < 8


def test_parity_on_chinese_characters() -> None:
    """lang="zh": per-character tokens, scored exactly as coco would score them."""
    preds = ["双肺纹理清晰，心影不大。", "右下肺见片状阴影，考虑炎症。", "心影增大，双肺未见实变。"]
    targets = [["双肺纹理清晰，心影大小正常。"], ["右下肺炎症。", "右下肺片状影"], ["心脏增大。"]]
    ours, ref = our_scores(preds, targets, "zh"), coco_scores(preds, targets, "zh")
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=TOL, rel=0), key


# Words with punctuation and case so the tokenizer is exercised too; a small vocabulary
# so that n-grams overlap.
_WORDS = ["no", "effusion.", "Pleural", "heart", "is", "normal", "X-ray", "3.5cm", "(left)", "lung"]
_sentence = st.lists(st.sampled_from(_WORDS), max_size=12).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_sentence, st.lists(_sentence, min_size=1, max_size=3)), min_size=1, max_size=8
    )
)
def test_parity_on_random_sentences(samples: list[tuple[str, list[str]]]) -> None:
    """Edge cases the real corpus lacks: empty and 1-token sentences, repeats, ties."""
    preds = [p for p, _ in samples]
    targets = [refs for _, refs in samples]
    # pycocoevalcap's CIDEr asserts on a corpus whose references are all empty.
    assume(any(tokenize(r) for refs in targets for r in refs))
    ours, ref = our_scores(preds, targets), coco_scores(preds, targets)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=TOL, rel=0), key
