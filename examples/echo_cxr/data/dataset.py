"""Torch datasets of ECHO samples, and the synthetic data set on disk.

* :class:`CXRRecordDataset`: a list of :class:`CXRRecord` (images read from disk) -> processor samples.
* :class:`SyntheticCXRDataset`: the synthetic generator, in memory, sample i drawn on demand
  from ``sample_seed(seed, i)`` (nothing is cached; the same index always gives the same sample).
* :func:`write_synthetic_dataset`: N studies to ``out_dir`` as PNGs plus a JSONL of
  CXRRecords (labels in ``metadata["labels"]``). Each PNG is written to a temp file and renamed,
  and the JSONL is renamed into place last, so a reader never sees a record whose image is
  missing or a half-written file.

Usage::

    jsonl = write_synthetic_dataset("runs/data/synthetic", n=1000, seed=0)
    ds = CXRRecordDataset(read_records(jsonl), processor)
    ds = SyntheticCXRDataset(1000, processor, seed=0, languages=("en", "zh"))
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from examples.echo_cxr.data.processor import CXRProcessor
from examples.echo_cxr.data.records import LANGUAGES, CXRRecord
from examples.echo_cxr.data.synthetic import (
    SyntheticConfig,
    SyntheticSample,
    generate_sample,
    sample_seed,
)


def _check_languages(languages: Sequence[str]) -> tuple[str, ...]:
    bad = [lang for lang in languages if lang not in LANGUAGES]
    if not languages or bad:
        raise ValueError(f"languages={tuple(languages)}; expected a non-empty subset of {LANGUAGES}")
    return tuple(languages)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_synthetic_dataset(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    config: SyntheticConfig | None = None,
    languages: Sequence[str] = ("en", "zh"),
    jsonl_name: str = "records.jsonl",
) -> Path:
    """Write ``n`` synthetic studies; returns the JSONL path.

    Layout: ``out_dir/images/<study_id>.png`` and ``out_dir/<jsonl_name>`` with one record per
    study and language (the zh record shares the image; its key gets ``#zh``). Image paths in the
    JSONL are relative to ``out_dir``; :func:`read_records` resolves them.
    """
    import io

    languages = _check_languages(languages)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        s = generate_sample(sample_seed(seed, i), config, study_id=f"syn{seed}_{i:06d}")
        rel = f"images/{s.study_id}.png"
        buf = io.BytesIO()
        s.to_pil().save(buf, format="PNG")
        _atomic_write(out / rel, buf.getvalue())
        lines += [s.to_record([rel], lang).to_json() for lang in languages]
    _atomic_write(out / jsonl_name, ("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
    return out / jsonl_name


def read_records(path: str | os.PathLike, resolve: bool = True) -> list[CXRRecord]:
    """CXRRecords from a JSONL, or from a file of ECHO records (``{sample_id, images, ground_truth}``,
    a JSON list or JSONL; see :mod:`examples.echo_cxr.data.echo_json`); relative image paths are made
    absolute against the file's folder."""
    from examples.echo_cxr.data.echo_json import is_echo_file, read_echo_records

    path = Path(path)
    if is_echo_file(path):
        return read_echo_records(path, resolve=resolve)
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = CXRRecord.from_json(line)
                if resolve:
                    r.image_paths = [str(p if Path(p).is_absolute() else path.parent / p) for p in r.image_paths]
                records.append(r)
    return records


class CXRRecordDataset(Dataset):
    """Processor samples for a list of records; images are read from disk on access.

    With ``rejects_path`` a study whose image can no longer be decoded (the file was damaged
    after curation checked it) does not stop training: it is appended to ``rejects_path``
    (one :class:`~examples.echo_cxr.data.records.Rejected` JSON line, stage ``"load"``, written
    once per study and process with one ``O_APPEND`` write and ``fsync``), counted in
    :attr:`skipped`, logged, and the next study in the list that decodes takes its place, so
    every batch keeps its size and the data order stays a function of the files. Without it
    the :class:`~examples.echo_cxr.data.processor.ImageDecodeError` (naming the study and the
    file) is raised, as evaluation needs: there a substitute would score another study twice.
    """

    def __init__(self, records: Sequence[CXRRecord], processor: CXRProcessor, image_root: str | Path | None = None,
                 rejects_path: str | Path | None = None) -> None:
        self.records = list(records)
        self.processor = processor
        self.image_root = image_root
        self.rejects_path = None if rejects_path is None else Path(rejects_path)
        self.skipped: dict[str, str] = {}
        """Studies skipped by this process: key -> reason (data-loader workers keep their own)."""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.rejects_path is None:
            return self.processor.from_record(self.records[index], self.image_root)
        from examples.echo_cxr.data.processor import ImageDecodeError

        for step in range(len(self.records)):
            record = self.records[(index + step) % len(self.records)]
            try:
                return self.processor.from_record(record, self.image_root)
            except ImageDecodeError as err:
                self._skip(record, str(err))
        raise ImageDecodeError(f"no study of {len(self.records)} has a decodable image; see {self.rejects_path}")

    def _skip(self, record: CXRRecord, reason: str) -> None:
        import logging

        from examples.echo_cxr.data.records import Rejected

        if record.key in self.skipped:
            return
        self.skipped[record.key] = reason
        line = (Rejected.of(record, "load", reason).to_json() + "\n").encode("utf-8")
        self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.rejects_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:  # one write of a whole line: lines of several loader workers do not interleave
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        logging.getLogger(__name__).warning("skipped %s (%d skipped so far, listed in %s)", reason,
                                            len(self.skipped), self.rejects_path)


class SyntheticCXRDataset(Dataset):
    """``n`` synthetic studies x ``languages``; item ``i`` is study ``i // len(languages)`` in
    language ``languages[i % len(languages)]``, drawn on demand (deterministic per index)."""

    def __init__(
        self,
        n: int,
        processor: CXRProcessor,
        seed: int = 0,
        config: SyntheticConfig | None = None,
        languages: Sequence[str] = ("en",),
        start: int = 0,
    ) -> None:
        if n < 0:
            raise ValueError(f"n={n}; expected >= 0")
        self.n, self.processor, self.seed, self.start = n, processor, seed, start
        self.config = config or SyntheticConfig()
        self.languages = _check_languages(languages)

    def __len__(self) -> int:
        return self.n * len(self.languages)

    def sample(self, study: int) -> SyntheticSample:
        """The raw synthetic study ``study`` (0-based within this dataset)."""
        i = self.start + study
        return generate_sample(sample_seed(self.seed, i), self.config, study_id=f"syn{self.seed}_{i:06d}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        study, lang = divmod(index, len(self.languages))
        return self.processor.from_synthetic(self.sample(study), self.languages[lang])
