"""Training checkpoints that are written atomically, carry a checksum and never run code on load.

:class:`VerifiedCheckpointIO` is the ``CheckpointIO`` plugin of every trainer
:func:`~blockdistill.lightning.trainer.build_trainer` builds, so it is what Lightning's own save
and resume path (``trainer.fit(ckpt_path=...)``) go through:

- save: ``torch.save`` into a temporary file next to the target, ``fsync``, then
  ``os.replace``; a sidecar ``<name>.ckpt.sha256`` records the digest (listing the previous
  digest too while the rename happens, see :mod:`blockdistill.utils.checksum`);
- load: the sidecar is checked first (empty, truncated or modified file: a
  :class:`~blockdistill.utils.checksum.DamagedFileError` naming the file and what to do), then
  ``torch.load(..., weights_only=True)`` explicitly, so a checkpoint whose unpickling would run
  code is refused even when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set (that variable only
  overrides calls that leave ``weights_only`` unset).

A checkpoint without a sidecar (written by plain Lightning) is loaded (still ``weights_only``)
with a warning that it could not be verified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from blockdistill.utils.checksum import (
    DamagedFileError,
    read_sums,
    sha256_file,
    sidecar,
    verify_file,
    write_sidecar,
)

__all__ = ["VerifiedCheckpointIO", "load_checkpoint", "preflight_checkpoint"]


def _what_to_do(path: Path) -> str:
    return (f"Do not resume from it: delete {path.name} and {path.name}.sha256 in {path.parent} to start over, "
            "or resume from another checkpoint (trainer.save_top_k keeps step=*.ckpt) by copying it, with its "
            ".sha256, to last.ckpt")


def preflight_checkpoint(path: str | os.PathLike) -> None:
    """Check a checkpoint that another reader will load: sidecar, then a memory-mapped
    ``weights_only=True`` load (cheap: no tensor is read) that refuses code-carrying pickles."""
    load_checkpoint(path, mmap=True)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Verify ``path`` against its sidecar, then ``torch.load`` it with ``weights_only=True``."""
    path = Path(path)
    if not verify_file(path, _what_to_do(path)):
        rank_zero_warn(f"{path}: no {path.name}.sha256 next to it, so it cannot be verified (written by another "
                       "tool?); loading it anyway (weights only)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - re-raised with the file and the cause
        if isinstance(e, DamagedFileError):
            raise
        first = (str(e).splitlines() or [""])[0][:300]
        raise DamagedFileError(f"{path}: cannot be loaded as weights only ({type(e).__name__}: {first}): the file "
                               "is damaged, or it holds objects whose unpickling would run code, which is refused. "
                               f"{_what_to_do(path)}") from e


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Atomic, checksummed ``.ckpt`` files; loading verifies and never unpickles code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            digest = sha256_file(tmp)
            side = sidecar(path)
            old = read_sums(side)[0][0] if side.is_file() and path.is_file() else None
            write_sidecar(path, digest, also=old)  # old and new both verify while the file is replaced
            os.replace(tmp, path)
            write_sidecar(path, digest)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # ``weights_only`` from Lightning is ignored: always True (see the module docstring).
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        sidecar(path).unlink(missing_ok=True)
