"""Stage 1: keep chest X-ray studies with clinical content; reject the rest with a reason.

Rule-based, from a small clinical lexicon (no model): a study is rejected as non-chest when
its report or its recorded body part names a non-chest region or modality and no chest term
(a "knee" report without "lung"/"heart"/...), and as content-free when it is too short or
names no chest anatomy and no finding at all ("See separate report.").

    python -c "from examples.echo_cxr.data.curation.modality import ModalityFilter as F; \
print(F().verdict('Knee joint effusion.'))"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..records import CXRRecord, Rejected, RejectSink

CHEST_TERMS = (
    "chest", "lung", "lungs", "pulmonary", "pleura", "pleural", "heart", "cardiac",
    "cardiomegaly", "cardiomediastinal", "cardiopulmonary", "mediastinum", "mediastinal",
    "thorax", "thoracic", "hilar", "hila", "hilum", "costophrenic", "hemidiaphragm",
    "hemidiaphragms", "diaphragm", "trachea", "aorta", "aortic", "pneumothorax", "atelectasis",
    "consolidation", "airspace", "pneumonia", "rib", "ribs", "sternotomy", "lobe", "lobar",
    "apical", "bibasilar", "basilar", "emphysema", "copd", "retrocardiac", "picc",
    "endotracheal", "cxr",
)
# Findings that occur in any region ("joint effusion", "soft tissue edema"): they show that a
# report has clinical content but are no evidence that it is about the chest.
FINDING_TERMS = (
    "effusion", "effusions", "edema", "opacity", "opacities", "nodule", "nodules", "mass",
    "fracture", "fractures", "granuloma", "granulomas", "interstitial", "vascular",
    "vasculature", "silhouette", "calcified", "degenerative", "normal", "enlarged",
)
# Regions or modalities that, without any chest term, mean the study is not a chest X-ray.
NON_CHEST_TERMS = (
    "knee", "knees", "ankle", "foot", "feet", "toe", "toes", "hip", "hips", "pelvis", "pelvic",
    "femur", "femoral", "tibia", "tibial", "fibula", "patella", "humerus", "elbow", "wrist",
    "hand", "hands", "finger", "fingers", "forearm", "skull", "head", "brain", "cranial",
    "sinus", "sinuses", "mandible", "orbit", "orbits", "abdomen", "abdominal", "bowel", "kub",
    "lumbar", "sacrum", "coccyx", "cervical spine", "mammogram", "mammography", "breast",
    "ultrasound", "sonographic", "mri", "ct head", "dental",
)
# Whole-study verdicts: they name no anatomy but do state a finding (a normal study).
GLOBAL_TERMS = (
    "no active disease", "no acute disease", "no acute abnormality", "no acute abnormalities",
    "no acute findings", "no acute process", "normal study", "normal examination",
    "normal exam", "no significant abnormality", "within normal limits",
)
# Phrases that carry no finding: a report made only of these says nothing about the image.
BOILERPLATE = (
    r"see (the )?(separate|attached|prior|previous|scanned|final|dictated) report",
    r"report (is )?(not available|to follow|pending|in progress)",
    r"dictated (by|elsewhere)", r"no report", r"see (the )?(note|comments?) below",
    r"please refer to", r"preliminary (report|read)", r"wet read", r"refer to (the )?report",
)


def _pattern(terms: Iterable[str]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(t).replace(r"\ ", r"\s+") for t in terms), key=len, reverse=True)
    return re.compile(rf"\b(?:{'|'.join(alternatives)})\b", re.IGNORECASE)


@dataclass
class ModalityFilter:
    """Reject non-chest studies and reports without clinical content.

    The report text judged is findings + impression, or the raw ``report`` when both are
    empty; ``metadata["body_part"]`` / ``metadata["procedure"]`` count as well when present.
    """

    name: str = "modality"
    min_words: int = 3
    """Reports with fewer alphabetic words than this (after removing boilerplate) carry no
    clinical content ("Normal." alone is not a usable training target)."""
    chest_terms: tuple[str, ...] = CHEST_TERMS
    non_chest_terms: tuple[str, ...] = NON_CHEST_TERMS
    finding_terms: tuple[str, ...] = FINDING_TERMS
    global_terms: tuple[str, ...] = GLOBAL_TERMS

    def __post_init__(self) -> None:
        if self.min_words < 0:
            raise ValueError(f"min_words={self.min_words}; expected >= 0")
        self._chest = _pattern(self.chest_terms)
        self._clinical = _pattern(self.finding_terms + self.global_terms)
        self._non_chest = _pattern(self.non_chest_terms)
        self._boilerplate = re.compile("|".join(BOILERPLATE), re.IGNORECASE)

    def params(self) -> dict[str, Any]:
        return {"min_words": self.min_words, "chest_terms": list(self.chest_terms),
                "non_chest_terms": list(self.non_chest_terms),
                "finding_terms": list(self.finding_terms),
                "global_terms": list(self.global_terms)}

    def verdict(self, text: str, body_part: str = "") -> str | None:
        """Why a study with this report (and recorded body part) is rejected, or ``None``."""
        chest = self._chest.findall(text) + self._chest.findall(body_part)
        other = self._non_chest.findall(text) + self._non_chest.findall(body_part)
        if other and not chest:
            return f"not a chest study: mentions {sorted({o.lower() for o in other})} and no chest term"
        if body_part and self._non_chest.search(body_part) and not self._chest.search(body_part):
            return f"not a chest study: body part {body_part!r}"
        content = self._boilerplate.sub(" ", text)
        words = re.findall(r"[A-Za-z]{2,}", content)
        if len(words) < self.min_words:
            return f"no clinical content: {len(words)} words after boilerplate ({text[:60]!r})"
        if not chest and not self._clinical.search(content):
            return f"no clinical content: no chest anatomy or finding named ({text[:60]!r})"
        return None

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield chest studies with content; reject the others with the rule that fired."""
        for record in records:
            text = f"{record.findings} {record.impression}".strip() or record.report
            body = " ".join(
                str(record.metadata.get(k, "")) for k in ("body_part", "procedure")
            ).strip()
            reason = self.verdict(text, body)
            if reason is None:
                yield record
            else:
                reject(Rejected.of(record, self.name, reason))
