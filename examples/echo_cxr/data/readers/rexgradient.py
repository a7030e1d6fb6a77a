"""ReXGradient-160K reader: the per-split metadata JSON (or CSV) plus the de-identified PNGs.

On-disk format (docs/data.md; an assumption pieced together from public loaders, since the
data set is gated): ``metadata/<split>_metadata.json`` maps a study key to a study dict::

    {"<key>": {"PatientID": "...", "StudyInstanceUid": "1.2.826...", "StudyDate": "20140903",
               "Indication": "...", "Comparison": "...", "Findings": "...", "Impression": "...",
               "ImagePath": ["../deid_png/GRDN.../....png", ...],
               "ImageViewPosition": ["PA", "LATERAL"], "ImageBodyPart": ["CHEST", "CHEST"]}}

A list of such dicts is accepted too, and a CSV with the same column names (one row per
study, or per image with ``ImagePath`` a single path; list-valued cells may be JSON lists).
``ImagePath`` entries starting with ``../`` are relative to the metadata folder, others to
``root``.

    python -c "from examples.echo_cxr.data.readers.rexgradient import ReXGradientReader as R; \
print(sum(1 for _ in R('/data/ReXGradient-160K', 'metadata/test_metadata.json').read(print)))"
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import CXRRecord, RejectSink
from .base import (
    check_image_mode,
    is_blank,
    readable_images,
    reject_study,
    study_record,
    surrogate_problem,
)

SOURCE = "rexgradient"
_LIST_KEYS = ("ImagePath", "ImageViewPosition", "ImageBodyPart")
_FRONTAL = ("PA", "AP", "POSTERO_ANTERIOR", "ANTERO_POSTERIOR", "AP AXIAL")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in json.loads(text)]
        except json.JSONDecodeError:
            pass  # not JSON: treat the cell as one path below
    return [text] if text else []


@dataclass
class ReXGradientReader:
    """Read ReXGradient-160K studies from one metadata file (one split)."""

    root: Path
    """Data-set folder (holds ``metadata/`` and ``deid_png/``)."""
    metadata_file: Path
    """The split's metadata, ``.json`` or ``.csv``; relative paths are taken below ``root``."""
    image_check: str = "decode"
    """See :data:`~examples.echo_cxr.data.readers.base.ImageCheck`."""
    source: str = SOURCE

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        meta = Path(self.metadata_file)
        self.metadata_file = meta if meta.is_absolute() else self.root / meta
        check_image_mode(self.image_check)
        if self.metadata_file.suffix not in (".json", ".csv"):
            raise ValueError(f"metadata_file={self.metadata_file}; expected a .json or .csv file")
        if not self.metadata_file.is_file():
            raise FileNotFoundError(f"ReXGradient metadata not found at {self.metadata_file}")

    def params(self) -> dict[str, Any]:
        return {
            "reader": type(self).__name__,
            "metadata_file": str(self.metadata_file),
            "image_check": self.image_check,
        }

    def _studies(self) -> Iterator[tuple[str, dict[str, Any]]]:
        # surrogateescape keeps one bad study from aborting the file; it is rejected below.
        with open(self.metadata_file, encoding="utf-8", errors="surrogateescape", newline="") as f:
            if self.metadata_file.suffix == ".json":
                data = json.load(f)
                items = data.items() if isinstance(data, dict) else enumerate(data)
                for key, study in items:
                    if not isinstance(study, dict):
                        raise ValueError(
                            f"{self.metadata_file}: entry {key!r} is {type(study).__name__}; "
                            "expected a study object"
                        )
                    yield str(study.get("StudyInstanceUid") or study.get("id") or key), study
                return
            merged: dict[str, dict[str, Any]] = {}
            for i, row in enumerate(csv.DictReader(f)):
                key = row.get("StudyInstanceUid") or row.get("id") or str(i)
                study = merged.setdefault(key, {**row, **{k: [] for k in _LIST_KEYS}})
                for k in _LIST_KEYS:
                    study[k].extend(_as_list(row.get(k)))
            yield from merged.items()

    def _resolve(self, rel: str) -> Path:
        if rel.startswith("../"):
            return (self.metadata_file.parent / rel).resolve()
        path = Path(rel)
        return path if path.is_absolute() else self.root / path

    def read(self, reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield one record per study; reject empty, non-UTF-8 or image-less ones."""
        for study_id, study in self._studies():
            record = self._study(study_id, study, reject)
            if record is not None:
                yield record

    def _study(self, study_id: str, study: dict[str, Any], reject: RejectSink) -> CXRRecord | None:
        problem = surrogate_problem(study, f"{self.metadata_file.name} study {study_id}")
        if problem:
            reject_study(reject, SOURCE, study_id, "read", problem)
            return None
        findings = " ".join(str(study.get("Findings") or "").split())
        impression = " ".join(str(study.get("Impression") or "").split())
        if is_blank(findings, impression):
            reject_study(reject, SOURCE, study_id, "read", "empty report (no Findings/Impression)")
            return None
        paths = _as_list(study.get("ImagePath"))
        views = _as_list(study.get("ImageViewPosition"))
        views += [""] * (len(paths) - len(views))
        order = sorted(range(len(paths)), key=lambda i: (views[i].upper() not in _FRONTAL, i))
        wanted = [self._resolve(paths[i]) for i in order]
        found = readable_images(
            wanted, self.image_check, reject, SOURCE, study_id, "no ImagePath listed"
        )
        if found is None:
            return None
        image_paths, dropped = found
        kept = set(image_paths)
        body_parts = sorted({b for b in _as_list(study.get("ImageBodyPart")) if b})
        metadata: dict[str, Any] = {
            "patient_id": str(study.get("PatientID", "")),
            "view_positions": [views[i] for i, p in zip(order, wanted) if str(p) in kept],
            "body_part": " ".join(body_parts),
            "indication": str(study.get("Indication") or ""),
            "comparison": str(study.get("Comparison") or ""),
            "study_date": str(study.get("StudyDate") or ""),
        }
        report = "\n".join(
            f"{label}: {text}" for label, text in (("FINDINGS", findings), ("IMPRESSION", impression))
            if text
        )
        return study_record(
            SOURCE, study_id, image_paths, dropped,
            findings=findings, impression=impression, report=report, metadata=metadata,
        )
