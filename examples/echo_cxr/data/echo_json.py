"""ECHO's JSON record format, in and out.

The released ECHO evaluation data (midea-ai/ECHO, ``eval/CXRTest_demo/jsons/*.json``) is a JSON
list of studies::

    {"sample_id": "c274b0b2...", "images": ["../CXRTest/mimic/files/p10/.../fd41.jpg", ...],
     "ground_truth": {"findings": "...", "impression": "..."}}

with image paths relative to the JSON file. :func:`read_echo_records` reads such a file (a JSON
list, or JSONL with one such object per line) into :class:`CXRRecord` (absolute image paths;
language from the text: Chinese characters in the ground truth make it ``zh``; source from the
file name where it names one of ECHO's test sets, else ``external``). :func:`echo_dict` and
:func:`write_echo_records` write records back in the same format, with paths relative to the
output file, plus any extra fields (a generated report, its sections, decoding statistics).

A malformed entry gets an error naming the file, the entry's index and its ``sample_id``; with a
``reject`` sink it is reported there instead and reading goes on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from blockdistill.evaluation.report import atomic_write_text
from examples.echo_cxr.data.records import CXRRecord, Rejected, RejectSink

__all__ = ["echo_dict", "guess_language", "is_echo_file", "parse_echo_entry", "read_echo_records",
           "write_echo_records"]

_CJK = re.compile(r"[\u4e00-\u9fff]")
_SOURCE_BY_NAME = (("mimic", "mimic_cxr"), ("chexpert", "chexpert_plus"), ("rexgradient", "rexgradient"),
                   ("iu_xray", "iu_xray"), ("iu-xray", "iu_xray"))


def guess_language(*texts: str) -> str:
    """``zh`` when any text holds a CJK character, else ``en`` (ECHO's own rule, by script)."""
    return "zh" if any(_CJK.search(t or "") for t in texts) else "en"


def _source_from_name(path: Path) -> str:
    name = path.name.lower()
    return next((src for key, src in _SOURCE_BY_NAME if key in name), "external")


def parse_echo_entry(entry: Any, where: str, base_dir: Path | None = None, source: str = "external",
                     language: str | None = None) -> CXRRecord:
    """One ECHO object -> :class:`CXRRecord`; ``ValueError`` naming ``where`` (and the sample id) when malformed.

    Relative image paths are resolved against ``base_dir`` when given.
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object with sample_id, images, ground_truth; got {type(entry).__name__}")
    sid = entry.get("sample_id")
    label = f"{where} (sample_id {sid!r})" if sid is not None else where
    if not isinstance(sid, (str, int)) or str(sid) == "":
        raise ValueError(f"{label}: missing or empty sample_id")
    images = entry.get("images")
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise ValueError(f"{label}: images must be a list of path strings, got {images!r}")
    gt = entry.get("ground_truth", {})
    if gt is None:
        gt = {}
    if not isinstance(gt, Mapping):
        raise ValueError(f"{label}: ground_truth must be an object with findings and impression, got {gt!r}")
    findings, impression = gt.get("findings") or "", gt.get("impression") or ""
    if not isinstance(findings, str) or not isinstance(impression, str):
        raise ValueError(f"{label}: ground_truth.findings and .impression must be strings")
    paths = [str(p if base_dir is None or Path(p).is_absolute() else base_dir / p) for p in images]
    extras = {k: v for k, v in entry.items() if k not in ("sample_id", "images", "ground_truth")}
    lang = language or guess_language(findings, impression)
    return CXRRecord(study_id=str(sid), source=source, image_paths=paths, findings=findings, impression=impression,
                     language=lang, metadata={"format": "echo", **extras})


def _entries(path: Path) -> list[tuple[str, Any]]:
    """``(where, object)`` for every entry of a JSON list or a JSONL file."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return [(f"{path} entry {i}", obj) for i, obj in enumerate(data)]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"{path} line {n}", json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((f"{path} line {n}", _Broken(str(e))))
    return out


class _Broken:
    def __init__(self, why: str) -> None:
        self.why = why


def is_echo_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds ECHO records (a JSON list, or JSONL whose first object has ``sample_id``)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        return True
    first = head.splitlines()[0] if head else ""
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "sample_id" in obj and "study_id" not in obj


def read_echo_records(path: str | os.PathLike, *, source: str | None = None, language: str | None = None,
                      reject: RejectSink | None = None, resolve: bool = True) -> list[CXRRecord]:
    """Records of an ECHO JSON (list) or JSONL file, image paths resolved next to the file.

    Args:
        source: the records' :data:`~examples.echo_cxr.data.records.SOURCES` name (default: from the
            file name, e.g. ``mimic_test_EN_...json`` -> ``mimic_cxr``; else ``external``).
        language: force ``en`` / ``zh`` (default: from the ground truth's script).
        reject: where malformed entries go (with the reason naming them); None raises on the first.
        resolve: make relative image paths absolute against the file's folder (False: as written).
    """
    path = Path(path)
    src = source or _source_from_name(path)
    out = []
    for where, obj in _entries(path):
        try:
            if isinstance(obj, _Broken):
                raise ValueError(f"{where}: not valid JSON ({obj.why})")
            out.append(parse_echo_entry(obj, where, path.parent if resolve else None, src, language))
        except ValueError as e:
            if reject is None:
                raise
            reject(Rejected(key=where, stage="read_echo_records", reason=str(e), source=src))
    return out


def echo_dict(record: CXRRecord, base_dir: str | os.PathLike | None = None, **extra: Any) -> dict[str, Any]:
    """``record`` in ECHO's format (image paths relative to ``base_dir`` when given), then ``extra``."""
    images = [os.path.relpath(p, base_dir) if base_dir is not None and Path(p).is_absolute() else p
              for p in record.image_paths]
    return {"sample_id": record.study_id, "images": images,
            "ground_truth": {"findings": record.findings, "impression": record.impression}, **extra}


def write_echo_records(path: str | os.PathLike, items: Iterable[CXRRecord | Mapping[str, Any]]) -> Path:
    """Write records (or ready ECHO dicts) to ``path`` atomically: a JSON list for ``.json``, one object per
    line otherwise. Records' image paths are written relative to the file's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [echo_dict(r, path.parent.resolve()) if isinstance(r, CXRRecord) else dict(r) for r in items]
    if path.suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(path, text)
