"""The one record type every reader, curation stage and split speaks.

A :class:`CXRRecord` is one study: its images, its report split into findings and
impression, and where it came from. Readers yield them, curation stages map streams of them,
and the synthetic generator writes them, so every stage can be tested on any source.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("mimic_cxr", "chexpert_plus", "rexgradient", "iu_xray", "synthetic", "external")
"""``external``: studies read from another tool's files that name no data set (e.g. an ECHO JSON)."""
LANGUAGES = ("en", "zh")


@dataclass
class CXRRecord:
    """One chest X-ray study with its report.

    Invariant: ``source`` is one of :data:`SOURCES` and ``language`` one of :data:`LANGUAGES`.
    """

    study_id: str
    """Identifier unique within ``source`` (e.g. MIMIC's ``s50414267``)."""
    source: str
    """Data set the study came from; one of :data:`SOURCES`."""
    image_paths: list[str] = field(default_factory=list)
    """Paths of the study's images, frontal view first where known."""
    findings: str = ""
    """FINDINGS section text (may be empty when only an impression exists)."""
    impression: str = ""
    """IMPRESSION section text (may be empty when only findings exist)."""
    language: str = "en"
    """``"en"`` or ``"zh"``."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Source-specific extras (view positions, patient id, labels, split, ...). JSON-serialisable."""
    report: str = ""
    """The original free-text report as read from the source, before standardisation.

    Kept so that stage 2 can re-parse sections the reader could not find, and for provenance.
    Empty for records that never had a raw report (e.g. synthetic ones)."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"CXRRecord.source={self.source!r}; expected one of {SOURCES}")
        if self.language not in LANGUAGES:
            raise ValueError(f"CXRRecord.language={self.language!r}; expected one of {LANGUAGES}")

    @property
    def key(self) -> str:
        """Globally unique id: ``source/study_id`` (plus language for translated copies)."""
        base = f"{self.source}/{self.study_id}"
        return base if self.language == "en" else f"{base}#{self.language}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> CXRRecord:
        return cls(**json.loads(line))


@dataclass
class Rejected:
    """A record that left the pipeline, and why. Every input ends in the output or here."""

    key: str
    """``CXRRecord.key`` of the rejected record, or a file path when no record could be built."""
    stage: str
    """Name of the reader or curation stage that rejected it."""
    reason: str
    """Human-readable reason, e.g. ``"empty report"`` or ``"near-duplicate of iu_xray/CXR12"``."""
    source: str = ""
    """Data set of the rejected entry (one of :data:`SOURCES`), for per-source counts."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Rejected:
        return cls(**json.loads(line))

    @classmethod
    def of(cls, record: CXRRecord, stage: str, reason: str) -> Rejected:
        """The rejection of ``record`` by ``stage``, keyed and attributed to its source."""
        return cls(key=record.key, stage=stage, reason=reason, source=record.source)


RejectSink = Callable[[Rejected], None]
"""Where readers and stages report what they drop (e.g. ``list.append``)."""
