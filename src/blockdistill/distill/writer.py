"""Sharded, resumable, checksummed storage of trajectory records.

Layout of a collection directory::

    shard-r000-00000.safetensors      # rank 0's first shard (records, see records.py)
    manifest-r000.json                # rank 0's shards (file, sha256, example ids) and dropped ids
    manifest.json                     # merged summary, written by rank 0 at the end

Each rank owns its files: it writes only ``shard-r{rank}-*`` and ``manifest-r{rank}.json``, so
ranks never overlap. Every file is written to a temporary name and moved into place with
``os.replace``; a shard counts only once its manifest lists it. On resume, the ids listed in
every rank manifest (written *or* dropped) are skipped, and a rank deletes its own shards that
no manifest lists (a crash between the two renames), so nothing is lost or duplicated.

Resuming verifies before it skips: an id counts as done only when its shard exists and matches
the sha256 its manifest recorded. A rank *regenerates* its own damaged shards: the entry is taken
out of its manifest (recorded under ``regenerated`` with the reason), the file deleted, and its
examples are decoded again by this run. A directory that another teacher (weights hash), another
unmasking policy or other decode settings produced is refused (:class:`CollectionMismatchError`,
naming each field, both values and the manifest) instead of appended to.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blockdistill.config import ConfigError
from blockdistill.distill.filters import TrajectoryFilter
from blockdistill.distill.records import FORMAT, TrajectoryRecord, save_records
from blockdistill.utils.atomic import atomic_write_text
from blockdistill.utils.checksum import DamagedFileError, sha256_file

__all__ = ["MANIFEST", "CollectionMismatchError", "CorruptShardError", "ShardWriter", "check_producer", "done_ids",
           "finalize_manifest", "read_rank_manifests", "sha256_file", "shard_damage"]

MANIFEST = "manifest.json"
_RANK_MANIFEST = re.compile(r"^manifest-r(\d+)\.json$")


class CorruptShardError(DamagedFileError):
    """A shard's bytes do not match the checksum its manifest recorded (or it is missing)."""


class CollectionMismatchError(ConfigError):
    """A collection directory holds trajectories of another teacher, policy or decode settings."""


_DIGESTS: dict[tuple, str] = {}


def _digest(path: Path) -> str:
    """sha256 of ``path``, cached per (inode, size, mtime) so a resume hashes each shard once."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def shard_damage(directory: Path, entry: dict[str, Any]) -> str | None:
    """Why the shard a manifest ``entry`` lists cannot be used (missing, empty, checksum), or None."""
    path = directory / entry["file"]
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty (0 bytes)"
    digest = _digest(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest[:16]}... does not match the manifest's {entry['sha256'][:16]}... (truncated or modified)"
    return None


def check_producer(directory: str | Path, producer: dict[str, Any]) -> None:
    """Refuse to append to ``directory`` when a rank manifest there records another producer
    (teacher weights, policy, decode settings) than ``producer``, or none while it holds records."""
    directory = Path(directory)
    for rank, man in sorted(read_rank_manifests(directory).items()):
        where = _rank_manifest_path(directory, rank)
        theirs = man.get("producer")
        if theirs is None:
            if man["shards"] or man["dropped"]:
                raise CollectionMismatchError(
                    f"output_dir: {where} records no producer (written by an older blockdistill), so appending "
                    f"could mix trajectories of two teachers; use a new output_dir or delete {directory}")
            continue
        diff = [f"{k}: {theirs.get(k)!r} there, {producer.get(k)!r} in this run"
                for k in sorted(set(theirs) | set(producer)) if theirs.get(k) != producer.get(k)]
        if diff:
            raise CollectionMismatchError(
                f"output_dir: {directory} holds trajectories of another teacher or decoding ({where}): "
                + "; ".join(diff) + f". Appending would mix them: use a new output_dir, or delete {directory} "
                "to collect again")


def _rank_manifest_path(directory: Path, rank: int) -> Path:
    return directory / f"manifest-r{rank:03d}.json"


def read_rank_manifests(directory: str | Path) -> dict[int, dict[str, Any]]:
    """Every ``manifest-r*.json`` in ``directory``, by rank. Malformed files raise, naming the file."""
    directory = Path(directory)
    out: dict[int, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for p in sorted(directory.iterdir()):
        m = _RANK_MANIFEST.match(p.name)
        if not m:
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CorruptShardError(f"{p}: manifest is not valid JSON ({e.msg})") from None
        if data.get("format") != FORMAT:
            raise CorruptShardError(f"{p}: manifest format {data.get('format')!r}, expected {FORMAT!r}")
        out[int(m.group(1))] = data
    return out


def done_ids(directory: str | Path) -> set[str]:
    """Ids already handled in ``directory``: written to a listed shard that exists and matches its
    sha256, or dropped. The ids of a damaged shard are not done: a resumed run decodes them again."""
    directory = Path(directory)
    ids: set[str] = set()
    for man in read_rank_manifests(directory).values():
        for shard in man["shards"]:
            if shard_damage(directory, shard) is None:
                ids.update(shard["example_ids"])
        ids.update(man["dropped"])
    return ids


class ShardWriter:
    """Buffers one rank's records and writes them as shards of ``shard_size`` records.

    ``world_size``: the ranks of this run; rank 0 then also regenerates damaged shards of ranks
    beyond it (a resume on fewer processes than the run that wrote them).

    Invariants: an id is written at most once per directory (ids already in any manifest are
    skipped, and so are repeats within this run); a shard file exists under its final name only
    when complete, and is durable only once this rank's manifest lists it.
    """

    def __init__(self, directory: str | Path, rank: int = 0, shard_size: int = 256,
                 filter: TrajectoryFilter | None = None, meta: dict[str, Any] | None = None,
                 producer: dict[str, Any] | None = None, world_size: int | None = None) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rank, self.shard_size, self.filter = rank, shard_size, filter
        self._path = _rank_manifest_path(self.directory, rank)
        if producer is not None:
            producer = json.loads(json.dumps(producer))  # as a manifest reads back (tuples -> lists)
            check_producer(self.directory, producer)
        mans = read_rank_manifests(self.directory)
        self.manifest: dict[str, Any] = mans.get(rank) or {"format": FORMAT, "rank": rank, "shards": [], "dropped": {}}
        if meta:
            self.manifest.setdefault("meta", {}).update(meta)
        if producer is not None:
            self.manifest["producer"] = producer
        self.regenerated = self._drop_damaged(self.manifest, self._path)
        if rank == 0 and world_size is not None:  # ranks of an earlier, larger run: rank 0 repairs theirs
            for r, man in sorted(mans.items()):
                if r >= world_size:
                    self.regenerated += self._drop_damaged(man, _rank_manifest_path(self.directory, r))
        self._seen = done_ids(self.directory)
        self._buffer: list[TrajectoryRecord] = []
        self.written = 0
        self.dropped: Counter[str] = Counter()
        self.skipped = 0
        self._cleanup()
        listed = [int(s["file"].rsplit("-", 1)[1].split(".")[0]) for s in self.manifest["shards"]]
        self._next = max(listed, default=-1) + 1

    def _drop_damaged(self, manifest: dict[str, Any], path: Path) -> list[dict[str, Any]]:
        """Take the damaged shards out of ``manifest`` (saved to ``path``; their examples are
        decoded again) and delete their files. Returns ``[{"file", "reason", "examples"}]``."""
        bad = []
        for entry in list(manifest["shards"]):
            reason = shard_damage(self.directory, entry)
            if reason is not None:
                manifest["shards"].remove(entry)
                bad.append({"file": entry["file"], "reason": reason, "examples": len(entry["example_ids"])})
                warnings.warn(f"{self.directory / entry['file']}: {reason}; regenerating its "
                              f"{len(entry['example_ids'])} examples", stacklevel=3)
        if bad:
            manifest.setdefault("regenerated", []).extend(bad)
            atomic_write_text(path, json.dumps(manifest, indent=1))
            for b in bad:
                (self.directory / b["file"]).unlink(missing_ok=True)
        return bad

    def _cleanup(self) -> None:
        """Remove this rank's temporary files and shards no manifest lists (a crash mid-write)."""
        listed = {s["file"] for s in self.manifest["shards"]}
        prefix = f"shard-r{self.rank:03d}-"
        for p in self.directory.iterdir():
            if p.name.startswith(f".{prefix}") or p.name.startswith(f".{self._path.name}.tmp"):
                p.unlink(missing_ok=True)
            elif p.name.startswith(prefix) and p.name not in listed:
                p.unlink(missing_ok=True)

    def add(self, records: Iterable[TrajectoryRecord]) -> None:
        """Filter, deduplicate and buffer records; write full shards."""
        for r in records:
            if r.example_id in self._seen:
                self.skipped += 1
                continue
            self._seen.add(r.example_id)
            reason = self.filter(r) if self.filter is not None else None
            if reason is not None:
                self.manifest["dropped"][r.example_id] = reason
                self.dropped[reason] += 1
                continue
            self._buffer.append(r)
            if len(self._buffer) >= self.shard_size:
                self.flush()

    def flush(self) -> None:
        """Write the buffered records (if any) as one shard, then update the manifest.

        Dropped ids are persisted with the manifest even when the buffer is empty.
        """
        if self._buffer:
            name = f"shard-r{self.rank:03d}-{self._next:05d}.safetensors"
            final = self.directory / name
            tmp = self.directory / f".{name}.tmp-{os.getpid()}"
            save_records(tmp, self._buffer)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            digest = sha256_file(tmp)
            os.replace(tmp, final)
            self.manifest["shards"].append({"file": name, "sha256": digest, "num_examples": len(self._buffer),
                                            "example_ids": [r.example_id for r in self._buffer]})
            self.written += len(self._buffer)
            self._buffer = []
            self._next += 1
        atomic_write_text(self._path, json.dumps(self.manifest, indent=1))

    def close(self) -> None:
        self.flush()

    @property
    def pending(self) -> int:
        """Records kept but not yet in a shard (written at the next full shard or :meth:`close`)."""
        return len(self._buffer)

    @property
    def stats(self) -> dict[str, int]:
        """This run's counts: ``written``, ``skipped`` (already done) and ``dropped_<reason>``."""
        return {"written": self.written, "skipped": self.skipped,
                **{f"dropped_{k}": v for k, v in sorted(self.dropped.items())}}


def finalize_manifest(directory: str | Path) -> dict[str, Any]:
    """Merge the rank manifests into ``manifest.json`` (atomically) and return it.

    Raises :class:`ValueError` if an id appears in two shards (it never should).
    """
    directory = Path(directory)
    mans = read_rank_manifests(directory)
    shards, dropped, owner = [], {}, {}
    for rank, man in sorted(mans.items()):
        for s in man["shards"]:
            shards.append({"file": s["file"], "sha256": s["sha256"], "num_examples": s["num_examples"], "rank": rank})
            for ex in s["example_ids"]:
                if ex in owner:
                    raise ValueError(f"example {ex!r} is in both {owner[ex]} and {s['file']} under {directory}")
                owner[ex] = s["file"]
        dropped.update(man["dropped"])
    meta = next((m["meta"] for m in mans.values() if "meta" in m), {})
    summary = {
        "format": FORMAT,
        "num_examples": len(owner),
        "num_dropped": len(dropped),
        "dropped_by_reason": dict(sorted(Counter(dropped.values()).items())),
        "shards": shards,
        "ranks": sorted(mans),
        "meta": meta,
        "producer": next((m["producer"] for m in mans.values() if "producer" in m), None),
        "regenerated": [r for m in mans.values() for r in m.get("regenerated", [])],
    }
    atomic_write_text(directory / MANIFEST, json.dumps(summary, indent=1))
    return summary
