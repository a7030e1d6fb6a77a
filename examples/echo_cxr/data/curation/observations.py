"""The 14 CheXpert observations: how reports mention them, negate them, hedge them.

A small NegEx-style classifier: a sentence mentions an observation when it contains one of its
phrases; the mention is *negative* when a negation cue governs it within its clause ("no",
"without", "... is normal"), *uncertain* when the sentence hedges ("possible", "cannot be
excluded"), else *positive*. The rule-based standardiser uses it to add an explicit negative
sentence for every observation a report leaves unmentioned, and never one that contradicts it.

    >>> mentions("No pleural effusion, but possible left basilar atelectasis.")
    {'Atelectasis': 'uncertain', 'Pleural Effusion': 'negative'}
"""

from __future__ import annotations

import re

# Observation -> (phrases that mention it, the explicit negative sentence written when absent).
# Order is the order negatives are appended in. "No Finding" is a summary label, not an
# observation a sentence can negate, so it is not enumerated.
OBSERVATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "Enlarged Cardiomediastinum": (
        ("cardiomediastinal silhouette", "cardiomediastinal contour", "cardiomediastinal contours",
         "cardiomediastinum", "mediastinal contour", "mediastinal contours", "mediastinal silhouette",
         "mediastinum", "mediastinal widening", "widened mediastinum"),
        "The cardiomediastinal silhouette is within normal limits.",
    ),
    "Cardiomegaly": (
        ("cardiomegaly", "heart size", "cardiac size", "cardiac silhouette", "heart is enlarged",
         "enlarged heart", "cardiac enlargement", "heart is", "heart appears"),
        "The heart size is normal.",
    ),
    "Lung Opacity": (
        ("opacity", "opacities", "opacification", "infiltrate", "infiltrates", "airspace disease",
         "air space disease", "lung opacity"),
        "No focal lung opacity.",
    ),
    "Lung Lesion": (
        ("nodule", "nodules", "nodular", "mass", "masses", "lesion", "lesions", "granuloma",
         "granulomas", "neoplasm", "tumor", "lung nodule or mass"),
        "No lung nodule or mass.",
    ),
    "Edema": (
        ("edema", "pulmonary vascular congestion", "vascular congestion", "congestion",
         "heart failure", "chf"),
        "No pulmonary edema.",
    ),
    "Consolidation": (("consolidation", "consolidations", "consolidative"), "No focal consolidation."),
    "Pneumonia": (("pneumonia", "pneumonias", "infection", "infectious"), "No evidence of pneumonia."),
    "Atelectasis": (
        ("atelectasis", "atelectatic", "collapse", "volume loss"),
        "No atelectasis.",
    ),
    "Pneumothorax": (("pneumothorax", "pneumothoraces"), "No pneumothorax."),
    "Pleural Effusion": (
        ("pleural effusion", "pleural effusions", "effusion", "effusions", "pleural fluid",
         "blunting of the costophrenic", "costophrenic angle blunting"),
        "No pleural effusion.",
    ),
    "Pleural Other": (
        ("pleural thickening", "pleural plaque", "pleural plaques", "fibrothorax",
         "pleural scarring", "pleural calcification", "pleural abnormality"),
        "No other pleural abnormality.",
    ),
    "Fracture": (("fracture", "fractures", "fractured"), "No acute fracture."),
    "Support Devices": (
        ("tube", "tubes", "catheter", "catheters", "picc", "central line", "central venous line",
         "pacemaker", "pacer", "defibrillator", "icd", "stent", "sternotomy wires", "wires",
         "drain", "device", "devices", "port", "hardware", "prosthesis", "valve replacement",
         "lines or tubes"),
        "No lines or tubes.",
    ),
}

# Negation cues before a mention, within its clause.
_PRE_NEG = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear of|absence of|absent|resolved|resolution of|"
    r"removal of|interval removal|rather than|neither|nor)\b"
)
# Cues after a mention that negate it ("heart size is normal", "effusion has resolved").
_POST_NEG = re.compile(
    r"^[^,;]*?\b(?:(?:is|are|was|were|remains?|appears?|appear to be)\s+(?:normal|stable and normal|"
    r"unremarkable|clear|absent|not (?:seen|identified|enlarged|present|visualized))|"
    r"within normal limits|(?:is|are|has|have)\s+resolved|not (?:seen|identified|present|"
    r"demonstrated|visualized)|normal in size|unremarkable)\b"
)
_PRE_NORMAL = re.compile(r"\b(?:normal|unremarkable|stable normal)\s+(?:\w+\s+){0,2}$")
_UNCERTAIN = re.compile(
    r"\b(?:may|might|could|possible|possibly|probable|probably|likely|questionable|suspicious|"
    r"suspected|suggests?|suggestive|cannot be excluded|can not be excluded|cannot be ruled out|"
    r"not (?:be )?excluded|versus|vs|concern for|concerning for|equivocal|borderline|"
    r"differential|consider|indeterminate)\b|\?"
)
# Negation words that do not negate the finding that follows ("no change in the effusion").
_PSEUDO_NEG = re.compile(
    r"\b(?:no|without)\s+(?:significant\s+|substantial\s+|interval\s+|appreciable\s+)?"
    r"(?:change|changes|increase|decrease|progression|improvement)\b|\bnot\s+(?:significantly\s+)?"
    r"(?:changed|increased|decreased|improved)\b|\bunchanged\b"
)
# Clause boundaries that end a negation's scope ("no pneumothorax, but a small effusion").
_CLAUSE = re.compile(r"\b(?:but|however|although|though|which|except|with the exception of)\b|;")
# Sentence ends, except after titles and "vs." ("Dr. Smith", "atelectasis vs. pneumonia").
_SENTENCE = re.compile(
    r"(?<=[.!?])(?<!\bDr\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bMrs\.)(?<!\bvs\.)(?<!\bSt\.)"
    r"\s+(?=[A-Z0-9(])|\n+"
)


def _phrase_re(phrases: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(p).replace(r"\ ", r"\s+") for p in phrases), key=len, reverse=True)
    return re.compile(rf"\b(?:{'|'.join(alternatives)})\b")


_PHRASES = {name: _phrase_re(phrases) for name, (phrases, _) in OBSERVATIONS.items()}
_RANK = {"negative": 0, "uncertain": 1, "positive": 2}


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences on terminal punctuation or line breaks."""
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def _classify(sentence: str, start: int, end: int) -> str:
    clause_start = 0
    for m in _CLAUSE.finditer(sentence, 0, start):
        clause_start = m.end()
    clause_end_m = _CLAUSE.search(sentence, end)
    clause_end = clause_end_m.start() if clause_end_m else len(sentence)
    before = sentence[clause_start:start]
    after = sentence[end:clause_end]
    negated = (
        bool(_PRE_NEG.search(before))
        or bool(_PRE_NORMAL.search(before))
        or bool(_POST_NEG.search(after))
    )
    if negated:
        return "negative"
    if _UNCERTAIN.search(sentence):
        return "uncertain"
    return "positive"


def mentions(text: str) -> dict[str, str]:
    """Map each observation ``text`` mentions to ``"positive"|"uncertain"|"negative"``.

    Several mentions of one observation combine as positive > uncertain > negative, so a
    report that both negates and asserts a finding counts as asserting it.
    """
    found: dict[str, str] = {}
    for sentence in split_sentences(text):
        lowered = _PSEUDO_NEG.sub(lambda m: "~" * len(m.group()), sentence.lower())
        for name, pattern in _PHRASES.items():
            for m in pattern.finditer(lowered):
                status = _classify(lowered, m.start(), m.end())
                if _RANK[status] >= _RANK.get(found.get(name, "negative"), 0) or name not in found:
                    found[name] = status
    return dict(sorted(found.items()))


def negative_sentence(observation: str) -> str:
    """The explicit negative sentence written for ``observation`` when a report omits it."""
    if observation not in OBSERVATIONS:
        raise KeyError(f"unknown observation {observation!r}; expected one of {list(OBSERVATIONS)}")
    return OBSERVATIONS[observation][1]
