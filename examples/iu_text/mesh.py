"""IU-Xray manual MeSH "major" codes -> the labeler's observations, written once.

An OpenI code is a descriptor followed by ``/``-separated qualifiers, e.g. ``Cardiomegaly/mild``,
``Pulmonary Atelectasis/base/left``, ``Opacity/lung/upper lobe/right`` or ``normal``. The
observations both vocabularies share are the CheXpert names that
:func:`examples.echo_cxr.labeler.label_report` extracts from text (:data:`OBSERVATIONS`).

Rules (tested against hand-written cases in ``tests/iu_text/test_mesh.py``):

1. The descriptor is matched case-insensitively, with surrounding spaces removed
   (``"Technical Quality of Image Unsatisfactory "`` carries a trailing space in the data).
2. Severity and location qualifiers (``mild``, ``base``, ``left``, ``multiple``, ...) never change
   *which* observation a code is; they are returned as :attr:`MeshCode.qualifiers` (and the side
   as :attr:`MeshCode.sides`) and ignored by the F1, which scores presence only.
3. A few descriptors are an observation only with a qualifier: ``Cardiac Shadow/enlarged`` and
   ``Heart/enlarged`` are Cardiomegaly, ``Mediastinum/enlarged|widened`` is Enlarged
   Cardiomediastinum, ``Costophrenic Angle/blunted`` is Pleural Effusion (the labeler reads a
   blunted angle as one), ``Thickening/pleura`` is Pleural Other.
4. ``normal`` is No Finding, positive only when no pathology code of the study maps to an
   observation (Support Devices aside, the labeler's convention).
5. Codes outside the shared vocabulary (``Calcified Granuloma``, ``Thoracic Vertebrae/degenerative``,
   ``Aorta/tortuous``, ``No Indexing``, ...) map to nothing: :func:`map_codes` lists them in
   ``unmapped`` and they add no label. Granulomas are among them: the labeler has no pattern for
   them, so mapping them would charge the labeler's vocabulary to every model alike.

Usage::

    labels, unmapped = map_codes(["Cardiomegaly/mild", "Calcified Granuloma"])
    labels["Cardiomegaly"]   # 1
    unmapped                 # ["Calcified Granuloma"]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from examples.echo_cxr.labeler import CHEXPERT_FINDINGS, POSITIVE

OBSERVATIONS: tuple[str, ...] = CHEXPERT_FINDINGS
"""The shared vocabulary: the labeler's 14 CheXpert observations (No Finding first)."""

_DESCRIPTORS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "opacity": ("Lung Opacity",),
    "density": ("Lung Opacity",),
    "airspace disease": ("Lung Opacity",),
    "infiltrate": ("Lung Opacity",),
    "nodule": ("Lung Lesion",),
    "mass": ("Lung Lesion",),
    "cavitation": ("Lung Lesion",),
    "pulmonary edema": ("Edema",),
    "pulmonary congestion": ("Edema",),
    "heart failure": ("Edema",),
    "consolidation": ("Consolidation",),
    "pneumonia": ("Pneumonia",),
    "pulmonary atelectasis": ("Atelectasis",),
    "pneumothorax": ("Pneumothorax",),
    "hydropneumothorax": ("Pneumothorax", "Pleural Effusion"),
    "pleural effusion": ("Pleural Effusion",),
    "fractures, bone": ("Fracture",),
    "catheters, indwelling": ("Support Devices",),
    "tube, inserted": ("Support Devices",),
    "stents": ("Support Devices",),
    "implanted medical device": ("Support Devices",),
    "medical device": ("Support Devices",),
    "surgical instruments": ("Support Devices",),
}
"""Descriptor (lower case) -> observations, whatever the qualifiers."""

_QUALIFIED: dict[str, tuple[frozenset[str], str]] = {
    "cardiac shadow": (frozenset({"enlarged"}), "Cardiomegaly"),
    "heart": (frozenset({"enlarged"}), "Cardiomegaly"),
    "mediastinum": (frozenset({"enlarged", "widened"}), "Enlarged Cardiomediastinum"),
    "costophrenic angle": (frozenset({"blunted"}), "Pleural Effusion"),
    "thickening": (frozenset({"pleura"}), "Pleural Other"),
}
"""Descriptor -> (qualifiers of which one must be present, observation)."""

_SIDES = {"left": ("left",), "right": ("right",), "bilateral": ("left", "right")}
NORMAL = "normal"


@dataclass(frozen=True)
class MeshCode:
    """One parsed code."""

    descriptor: str
    """As written, stripped (``"Pulmonary Atelectasis"``)."""
    qualifiers: tuple[str, ...]
    """Everything after the descriptor, stripped and lower-cased (``("base", "left")``)."""

    @property
    def sides(self) -> frozenset[str]:
        """``left``/``right`` named by the qualifiers (``bilateral`` is both)."""
        return frozenset(s for q in self.qualifiers for s in _SIDES.get(q, ()))

    @property
    def observations(self) -> tuple[str, ...]:
        """The shared observations this code asserts (empty: outside the shared vocabulary)."""
        key = self.descriptor.lower()
        if key in _DESCRIPTORS:
            return _DESCRIPTORS[key]
        if key in _QUALIFIED:
            needed, obs = _QUALIFIED[key]
            return (obs,) if needed & set(self.qualifiers) else ()
        return ()


def parse_code(code: str) -> MeshCode:
    """``"Opacity/lung/base/left"`` -> ``MeshCode("Opacity", ("lung", "base", "left"))``."""
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"a MeSH code must be a non-empty string, got {code!r}")
    head, *rest = code.split("/")
    if not head.strip():
        raise ValueError(f"MeSH code {code!r} has no descriptor before its first '/'")
    return MeshCode(head.strip(), tuple(q.strip().lower() for q in rest if q.strip()))


def map_codes(codes: Sequence[str]) -> tuple[dict[str, int | None], list[str]]:
    """Label dict over :data:`OBSERVATIONS` in the labeler's convention (1 = positive, None = not
    asserted: MeSH codes record presence only) plus the codes that mapped to nothing."""
    labels: dict[str, int | None] = dict.fromkeys(OBSERVATIONS)
    unmapped: list[str] = []
    normal = False
    for raw in codes:
        code = parse_code(raw)
        if code.descriptor.lower() == NORMAL and not code.qualifiers:
            normal = True
            continue
        obs = code.observations
        if not obs:
            unmapped.append(code.descriptor)
        for o in obs:
            labels[o] = POSITIVE
    pathologies = [o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")]
    if normal and not any(labels[o] == POSITIVE for o in pathologies):
        labels["No Finding"] = POSITIVE
    return labels, unmapped


def mesh_labels(codes: Sequence[str]) -> dict[str, int | None]:
    """:func:`map_codes` without the unmapped list."""
    return map_codes(codes)[0]


def coverage(studies: Iterable[Sequence[str]]) -> dict[str, object]:
    """How much of a corpus the mapping covers: studies with at least one mapped label, code
    counts mapped / unmapped, and the most frequent unmapped descriptors."""
    from collections import Counter

    n = with_label = mapped = 0
    missing: Counter[str] = Counter()
    for codes in studies:
        n += 1
        labels, unmapped = map_codes(codes)
        with_label += any(v == POSITIVE for v in labels.values())
        mapped += len([c for c in codes if parse_code(c).observations or c.strip().lower() == NORMAL])
        missing.update(unmapped)
    return {"studies": n, "studies_with_a_label": with_label, "codes_mapped": mapped,
            "codes_unmapped": sum(missing.values()), "top_unmapped": missing.most_common(10)}
