"""Atomic writes: a reader never sees a half-written file or directory, and a crash leaves the
previous one intact. Everything the library writes for later reading goes through these."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "replace_dir"]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file next to ``path``, flush it to disk, then rename it
    over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put the finished directory ``tmp`` in place of ``path`` (same file system). An existing
    ``path`` is first moved aside to ``.<name>.old`` and removed only once ``tmp`` is in place, so at
    every moment one complete directory exists under one of the two names."""
    tmp, path = Path(tmp), Path(path)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path
