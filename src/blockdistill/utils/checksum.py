"""Checksums that make a damaged file an error naming it, instead of a confusing crash later.

Two forms, both in ``sha256sum`` format (``<hex>  <name>`` per line, so ``sha256sum -c`` checks
them by hand too):

- a *sidecar* ``<file>.sha256`` next to one file (training checkpoints,
  :class:`~blockdistill.lightning.checkpoint_io.VerifiedCheckpointIO`). While a new version of
  the file is moved into place the sidecar lists the old and the new digest, so a kill between
  the two renames leaves a pair that still verifies;
- a directory manifest ``checksums.sha256`` listing every file below a directory (saved models:
  :func:`~blockdistill.models.adapter.atomic_save_pretrained` writes it,
  :meth:`~blockdistill.models.adapter.BlockDiffusionLM.from_pretrained` checks it).

A zero-byte file, a truncated one, a flipped byte and a missing file each raise
:class:`DamagedFileError` with the path and what to do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from blockdistill.utils.atomic import atomic_write_text

__all__ = ["DIR_MANIFEST", "DamagedFileError", "read_sums", "sha256_file", "sidecar", "verify_dir",
           "verify_file", "verify_model_dir", "weights_sha256", "write_dir_manifest", "write_sidecar"]

DIR_MANIFEST = "checksums.sha256"


class DamagedFileError(RuntimeError):
    """A file is empty, truncated, modified or missing: its bytes do not match its recorded sha256."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_sums(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(digest, name)`` pairs of a ``sha256sum``-format file; a malformed one is a DamagedFileError."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise DamagedFileError(f"{path}, line {n}: not a sha256sum line ({line[:80]!r}); the checksum file is "
                                   "damaged: restore it, or delete it to skip the check")
        out.append((digest, name))
    return out


def sidecar(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_sidecar(path: str | os.PathLike, digest: str, *, also: str | None = None) -> None:
    """Write ``<path>.sha256`` naming ``digest`` (and ``also``: the digest of the version being replaced)."""
    path = Path(path)
    lines = [f"{digest}  {path.name}"] + ([f"{also}  {path.name}"] if also and also != digest else [])
    atomic_write_text(sidecar(path), "\n".join(lines) + "\n")


def _check_bytes(path: Path, digests: set[str], what_to_do: str) -> None:
    if not path.is_file():
        raise DamagedFileError(f"{path}: missing, but its checksum file lists it. {what_to_do}")
    size = path.stat().st_size
    if size == 0:
        raise DamagedFileError(f"{path}: the file is empty (0 bytes; an interrupted copy or a full disk?). "
                               f"{what_to_do}")
    digest = sha256_file(path)
    if digest not in digests:
        raise DamagedFileError(f"{path}: sha256 {digest[:16]}... does not match the recorded "
                               f"{sorted(digests)[0][:16]}... ({size} bytes): the file is truncated or modified. "
                               f"{what_to_do}")


def verify_file(path: str | os.PathLike, what_to_do: str) -> bool:
    """Check ``path`` against its sidecar. False when there is no sidecar (nothing to check);
    a DamagedFileError naming the file and ``what_to_do`` when the bytes do not match."""
    path = Path(path)
    side = sidecar(path)
    if path.is_file() and path.stat().st_size == 0:
        _check_bytes(path, set(), what_to_do)
    if not side.is_file():
        return False
    sums = read_sums(side)
    if not sums:
        raise DamagedFileError(f"{side}: the checksum file is empty. {what_to_do}")
    _check_bytes(path, {d for d, _ in sums}, what_to_do)
    return True


def write_dir_manifest(directory: str | os.PathLike) -> Path:
    """Write ``<directory>/checksums.sha256`` listing every file below it (sorted; itself excluded)."""
    directory = Path(directory)
    lines = [f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}"
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != DIR_MANIFEST]
    out = directory / DIR_MANIFEST
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def verify_dir(directory: str | os.PathLike, what_to_do: str) -> bool:
    """Check every file ``<directory>/checksums.sha256`` lists. False when there is no such
    manifest (a model not saved by blockdistill); a DamagedFileError naming the first bad file."""
    directory = Path(directory)
    man = directory / DIR_MANIFEST
    if not man.is_file():
        return False
    for digest, name in read_sums(man):
        _check_bytes(directory / name, {digest}, what_to_do)
    return True


def verify_model_dir(path: str | os.PathLike) -> bool:
    """Verify a saved model directory against its manifest before anything reads it.

    True when every listed file matches; False when ``path`` is not a local directory (a hub id)
    or has no manifest (saved by Hugging Face or an older blockdistill: loaded unverified); a
    :class:`DamagedFileError` naming the first empty, truncated, modified or missing file."""
    path = Path(path)
    if not path.is_dir():
        return False
    return verify_dir(path, f"Do not use this model: save it again (rerun the stage that wrote {path}) or restore "
                            f"the directory from a copy; if you changed a file on purpose, delete {DIR_MANIFEST} "
                            "there to load it unverified")


def weights_sha256(module) -> str:
    """sha256 over a module's state dict: every entry's name, dtype, shape and bytes, in name order
    (the identity of a teacher, however it was loaded). Reads every weight once."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
