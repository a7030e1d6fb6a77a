"""MIMIC-CXR-JPG reader: JPEGs + free-text reports + the metadata (and split) CSV.

On-disk format (docs/data.md)::

    <root>/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id,subject_id,study_id,...,ViewPosition,...
    <root>/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id,study_id,subject_id,split   (optional)
    <root>/files/p10/p10000032/s50414267/<dicom_id>.jpg
    <reports_root>/files/p10/p10000032/s50414267.txt   (MIMIC-CXR's report zip, same tree)

A study is a ``study_id`` of the metadata CSV; its report is free text with ``FINDINGS:`` /
``IMPRESSION:`` headers, parsed by :func:`~.sections.split_sections`.

    python -c "from examples.echo_cxr.data.readers.mimic_cxr import MimicCXRReader as R; \
print(sum(1 for _ in R('/data/mimic-cxr-jpg').read(print)))"
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..records import CXRRecord, RejectSink
from .base import (
    check_image_mode,
    decode_utf8,
    is_blank,
    readable_images,
    reject_study,
    study_record,
)
from .sections import split_sections

SOURCE = "mimic_cxr"
METADATA_NAME = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_NAME = "mimic-cxr-2.0.0-split.csv"
# Frontal views first: report generation conditions on the frontal image when there is one.
_VIEW_RANK = {"PA": 0, "AP": 1, "AP AXIAL": 2, "LATERAL": 3, "LL": 4}


def _open_csv(path: Path) -> IO[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", newline="")  # type: ignore[operator]


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class MimicCXRReader:
    """Read MIMIC-CXR-JPG studies; one record per ``study_id`` in the metadata CSV."""

    root: Path
    """MIMIC-CXR-JPG folder holding ``files/`` and the metadata CSV."""
    reports_root: Path | None = None
    """Folder whose ``files/pXX/pN/sM.txt`` are the reports; defaults to ``root``."""
    image_check: str = "decode"
    """See :data:`~examples.echo_cxr.data.readers.base.ImageCheck`."""
    source: str = SOURCE

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.reports_root = Path(self.reports_root) if self.reports_root else self.root
        check_image_mode(self.image_check)
        metadata = _find(self.root, METADATA_NAME)
        if metadata is None:
            raise FileNotFoundError(
                f"expected {METADATA_NAME}[.gz] in {self.root}; it lists the images of each study"
            )
        self.metadata_csv = metadata
        self.split_csv = _find(self.root, SPLIT_NAME)

    def params(self) -> dict[str, Any]:
        return {
            "reader": type(self).__name__,
            "root": str(self.root),
            "reports_root": str(self.reports_root),
            "image_check": self.image_check,
        }

    def read(self, reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield one record per study, frontal images first; reject unusable studies."""
        studies = self._studies()
        splits = self._splits()
        for study_id, (subject_id, images) in studies.items():
            record = self._study(study_id, subject_id, images, splits.get(study_id), reject)
            if record is not None:
                yield record

    def _studies(self) -> dict[str, tuple[str, list[dict[str, str]]]]:
        """``study_id -> (subject_id, image rows)`` in CSV order (377k short rows: fits RAM)."""
        studies: dict[str, tuple[str, list[dict[str, str]]]] = {}
        with _open_csv(self.metadata_csv) as f:
            reader = csv.DictReader(f)
            missing = {"dicom_id", "subject_id", "study_id"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{self.metadata_csv} lacks columns {sorted(missing)}; "
                    f"found {reader.fieldnames}"
                )
            for row in reader:
                entry = studies.setdefault(row["study_id"], (row["subject_id"], []))
                entry[1].append(row)
        return studies

    def _splits(self) -> dict[str, str]:
        if self.split_csv is None:
            return {}
        with _open_csv(self.split_csv) as f:
            return {row["study_id"]: row["split"] for row in csv.DictReader(f)}

    def _study(
        self,
        study_id: str,
        subject_id: str,
        images: list[dict[str, str]],
        split: str | None,
        reject: RejectSink,
    ) -> CXRRecord | None:
        sid = f"s{study_id}"
        folder = Path("files") / f"p{subject_id[:2]}" / f"p{subject_id}"
        report_path = self.reports_root / folder / f"{sid}.txt"  # type: ignore[operator]
        if not report_path.is_file():
            reject_study(reject, SOURCE, sid, "read", f"missing report file {report_path}")
            return None
        text, problem = decode_utf8(report_path.read_bytes(), f"report {report_path}")
        if text is None:
            reject_study(reject, SOURCE, sid, "read", problem or "")
            return None
        if is_blank(text):
            reject_study(reject, SOURCE, sid, "read", f"empty report {report_path}")
            return None
        images = sorted(images, key=lambda r: _VIEW_RANK.get(r.get("ViewPosition", ""), 9))
        wanted = [self.root / folder / sid / f"{r['dicom_id']}.jpg" for r in images]
        found = readable_images(wanted, self.image_check, reject, SOURCE, sid, "no image rows")
        if found is None:
            return None
        image_paths, dropped = found
        kept = set(image_paths)
        sections = split_sections(text)
        metadata: dict[str, Any] = {
            "subject_id": subject_id,
            "view_positions": [
                r.get("ViewPosition", "") for r, p in zip(images, wanted) if str(p) in kept
            ],
            "procedure": images[0].get("PerformedProcedureStepDescription", ""),
            "study_date": images[0].get("StudyDate", ""),
        }
        if split is not None:
            metadata["source_split"] = split
        return study_record(
            SOURCE, sid, image_paths, dropped,
            findings=sections.get("findings", ""), impression=sections.get("impression", ""),
            report=text.strip(), metadata=metadata,
        )
