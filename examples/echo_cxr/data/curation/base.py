"""The one protocol every curation stage implements, and JSONL helpers they share.

A stage maps a stream of records to a stream of records and reports each record it drops to
a reject sink with a reason (never silently)::

    rejects = []
    kept = list(ModalityFilter().process(records, rejects.append))
    assert len(kept) + len(rejects) == len(records)

Stages know nothing about files; :class:`~.runner.Pipeline` chains them through JSONL files
so that a finished stage is skipped on re-runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from ..records import CXRRecord, RejectSink


@runtime_checkable
class Stage(Protocol):
    """One curation step over a stream of records.

    Invariant: every input record is either yielded (possibly changed, or as more than one
    record only where the stage says so) or reported once to ``reject``.
    """

    name: str
    """Short identifier used in file names, rejects and the summary (e.g. ``"dedup"``)."""

    def process(self, records: Iterable[CXRRecord], reject: RejectSink) -> Iterator[CXRRecord]:
        """Yield kept records; report dropped ones to ``reject`` with a reason."""
        ...

    def params(self) -> dict[str, Any]:
        """JSON-serialisable settings; a stage whose settings changed is re-run, not skipped."""
        ...


class JsonlRecords:
    """Re-iterable view of a records JSONL file: each ``iter()`` re-reads it from disk.

    Stages that need two passes (e.g. splits) iterate twice without holding the corpus in RAM.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __iter__(self) -> Iterator[CXRRecord]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield CXRRecord.from_json(line)

    def __len__(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for line in f if line.strip())


@contextmanager
def atomic_open(path: Path) -> Iterator[IO[str]]:
    """Write ``path`` through a temporary sibling renamed into place only on success.

    A crash leaves either the old file or no file, never a truncated one, so "the file exists"
    means "the stage finished".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_records(path: Path, records: Iterable[CXRRecord]) -> int:
    """Atomically write records as JSONL; returns how many were written."""
    n = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(record.to_json() + "\n")
            n += 1
    return n
