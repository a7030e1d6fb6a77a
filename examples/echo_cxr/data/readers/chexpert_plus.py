"""CheXpert-Plus reader: ``df_chexpert_plus_240401.csv`` (one row per image) plus the images.

On-disk format (docs/data.md; column names checked against the released CSV)::

    path_to_image,path_to_dcm,frontal_lateral,ap_pa,deid_patient_id,patient_report_date_order,
    report,section_narrative,section_clinical_history,section_history,section_comparison,
    section_technique,section_procedure_comments,section_findings,section_impression,
    section_end_of_impression,section_summary,section_accession_number,age,sex,race,ethnicity,
    interpreter_needed,insurance_type,recent_bmi,deceased,split

``path_to_image`` is ``train/patient00001/study1/view1_frontal.jpg``; a study is its folder.
The PNG release stores the same path with ``.png``; both are tried.

    python -c "from examples.echo_cxr.data.readers.chexpert_plus import CheXpertPlusReader as R; \
print(sum(1 for _ in R('/data/chexpert-plus').read(print)))"
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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

SOURCE = "chexpert_plus"
CSV_NAME = "df_chexpert_plus_240401.csv"
REQUIRED = ("path_to_image", "section_findings", "section_impression")
_TEXT_COLUMNS = ("report", "section_findings", "section_impression", "section_summary")


def _clean(value: str | None) -> str:
    """CSV cell as text; pandas-written CSVs spell a missing cell ``nan`` or leave it empty."""
    if value is None or value.strip().lower() == "nan":
        return ""
    return " ".join(value.split())


@dataclass
class CheXpertPlusReader:
    """Read CheXpert-Plus studies, grouping the CSV's image rows by study folder.

    The CSV is read twice: once to count each study's rows (paths only), once to emit a study
    as soon as its last row is seen. Memory is then the row index plus the pending studies,
    not the whole 223k-row CSV with its report texts.
    """

    root: Path
    """Folder holding the CSV and (below ``image_root``) the images."""
    csv_name: str = CSV_NAME
    image_root: Path | None = None
    """Folder that ``path_to_image`` is relative to; defaults to ``root``."""
    image_check: str = "decode"
    """See :data:`~examples.echo_cxr.data.readers.base.ImageCheck`."""
    source: str = SOURCE

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.image_root = Path(self.image_root) if self.image_root else self.root
        check_image_mode(self.image_check)
        self.csv_path = self.root / self.csv_name
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"expected the CheXpert-Plus CSV at {self.csv_path}")
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # report cells exceed 128 KiB rarely

    def params(self) -> dict[str, Any]:
        return {
            "reader": type(self).__name__,
            "csv": str(self.csv_path),
            "image_root": str(self.image_root),
            "image_check": self.image_check,
        }

    def _rows(self) -> Iterator[dict[str, str]]:
        # surrogateescape: one row with bad bytes is rejected, the rest of the file still reads.
        with open(self.csv_path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f)
            missing = set(REQUIRED) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{self.csv_path} lacks columns {sorted(missing)}; found {reader.fieldnames}"
                )
            yield from reader

    @staticmethod
    def _study_of(row: dict[str, str]) -> str:
        parts = PurePosixPath(row["path_to_image"]).parts
        # train/patient00001/study1/view1_frontal.jpg -> patient00001/study1
        return "/".join(parts[-3:-1]) if len(parts) >= 3 else str(PurePosixPath(*parts).parent)

    def read(self, reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield one record per study folder; reject empty, non-UTF-8 or image-less studies."""
        expected = Counter(self._study_of(row) for row in self._rows())
        pending: dict[str, list[dict[str, str]]] = {}
        for row in self._rows():
            study = self._study_of(row)
            rows = pending.setdefault(study, [])
            rows.append(row)
            if len(rows) == expected[study]:
                del pending[study]
                record = self._study(study, rows, reject)
                if record is not None:
                    yield record

    def _image_path(self, rel: str) -> Path:
        path = self.image_root / rel  # type: ignore[operator]
        if not path.exists() and path.with_suffix(".png").exists():
            return path.with_suffix(".png")
        return path

    def _study(self, study: str, rows: list[dict[str, str]], reject: RejectSink) -> CXRRecord | None:
        first = rows[0]
        for row in rows:
            problem = surrogate_problem(
                {c: row.get(c) for c in _TEXT_COLUMNS}, f"{self.csv_name} row {row['path_to_image']}"
            )
            if problem:
                reject_study(reject, SOURCE, study, "read", problem)
                return None
        findings = _clean(first.get("section_findings"))
        impression = _clean(first.get("section_impression")) or _clean(first.get("section_summary"))
        report = (first.get("report") or "").strip()
        if is_blank(findings, impression, report):
            reject_study(reject, SOURCE, study, "read", f"empty report ({first['path_to_image']})")
            return None
        rows = sorted(rows, key=lambda r: (r.get("frontal_lateral") != "Frontal", r["path_to_image"]))
        wanted = [self._image_path(r["path_to_image"]) for r in rows]
        found = readable_images(wanted, self.image_check, reject, SOURCE, study, "no image rows")
        if found is None:
            return None
        image_paths, dropped = found
        metadata: dict[str, Any] = {
            "patient_id": first.get("deid_patient_id", ""),
            "views": [
                r.get("frontal_lateral", "") for r, p in zip(rows, wanted) if str(p) in image_paths
            ],
            "source_split": first.get("split", ""),
            "age": first.get("age", ""),
            "sex": first.get("sex", ""),
        }
        return study_record(
            SOURCE, study, image_paths, dropped,
            findings=findings, impression=impression, report=report, metadata=metadata,
        )
