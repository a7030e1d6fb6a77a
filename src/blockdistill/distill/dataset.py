"""Reading a collection directory back: checksums first, then records one at a time.

``TrajectoryDataset`` lists every shard named by the rank manifests, checks its sha256 (a
mismatch raises :class:`CorruptShardError` naming the file), and serves records by index,
reading only that record's slices of the shard (safetensors memory-maps; nothing is
unpickled). Pair it with :func:`~blockdistill.distill.batch.collate_records`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from blockdistill.distill.records import FORMAT, TrajectoryRecord
from blockdistill.distill.writer import CorruptShardError, read_rank_manifests, sha256_file
from blockdistill.losses.rows import TokenDists

__all__ = ["TrajectoryDataset", "verify_collection"]

_OFFSET_KEYS = ("prompt_lens", "gen_lens", "response_lens")


def verify_collection(directory: str | Path) -> list[dict]:
    """Check every listed shard exists and matches its sha256; return the shard entries.

    Raises:
        CorruptShardError: naming the first missing or corrupted file.
        FileNotFoundError: when ``directory`` holds no manifest.
    """
    directory = Path(directory)
    mans = read_rank_manifests(directory)
    if not mans:
        raise FileNotFoundError(f"{directory}: no trajectory manifests (manifest-r*.json); run `blockdistill collect`")
    entries = []
    for man in mans.values():
        for s in man["shards"]:
            path = directory / s["file"]
            if not path.is_file():
                raise CorruptShardError(f"{path}: shard listed in the manifest is missing")
            digest = sha256_file(path)
            if digest != s["sha256"]:
                raise CorruptShardError(f"{path}: sha256 {digest} does not match the manifest's {s['sha256']}; "
                                        "the shard is corrupted (delete it and its manifest entry, then re-run "
                                        "collection to regenerate its examples)")
            entries.append({**s, "path": path})
    return entries


class _Shard:
    """Offsets of one shard; reads record ``j`` by slicing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CorruptShardError(f"{path}: not a trajectory shard (format {meta.get('format')!r})")
            self.keys = set(f.keys())
            small = {k: f.get_tensor(k) for k in _OFFSET_KEYS}
            self.num_images = f.get_tensor("num_images") if "num_images" in self.keys else None
            self.thw = f.get_tensor("image_grid_thw") if "image_grid_thw" in self.keys else None
        self.ids = json.loads(meta["example_ids"])
        self.vocab, self.block_size, self.eos = int(meta["vocab_size"]), int(meta["block_size"]), int(meta["eos_token_id"])
        self.eos_ids = tuple(json.loads(meta.get("eos_token_ids", "[]")))
        self.response_lens = small["response_lens"]

        def starts(lens: Tensor) -> list[int]:
            return torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).tolist()

        self.p_off, self.g_off = starts(small["prompt_lens"]), starts(small["gen_lens"])
        if self.num_images is not None:
            self.i_off = starts(self.num_images)
            patches = self.thw.prod(-1) if self.thw.numel() else torch.zeros(0, dtype=torch.long)
            self.x_off = starts(torch.stack([patches[a:b].sum() for a, b in zip(self.i_off[:-1], self.i_off[1:])]))

    def read(self, j: int) -> TrajectoryRecord:
        pa, pb, ga, gb = self.p_off[j], self.p_off[j + 1], self.g_off[j], self.g_off[j + 1]
        with safe_open(str(self.path), framework="pt") as f:
            def part(name: str, a: int, b: int) -> Tensor:
                return f.get_slice(name)[a:b]

            def dists(prefix: str) -> TokenDists | None:
                names = {k: part(k, ga, gb) for k in self.keys if k.startswith(prefix + ".")}
                return TokenDists.from_tensors(names, prefix, self.vocab) if names else None

            pix = thw = None
            if self.num_images is not None and int(self.num_images[j]) > 0:
                thw = self.thw[self.i_off[j]: self.i_off[j + 1]]
                pix = part("pixel_values", self.x_off[j], self.x_off[j + 1])
            return TrajectoryRecord(
                example_id=self.ids[j], prompt_ids=part("prompt_ids", pa, pb), tokens=part("tokens", ga, gb),
                commit_step=part("commit_step", ga, gb), block_steps=part("block_steps", ga, gb),
                target=dists("target"), block_size=self.block_size, eos_token_id=self.eos,
                response_len=int(self.response_lens[j]), first_step=dists("first_step"),
                pixel_values=pix, image_grid_thw=thw, eos_token_ids=self.eos_ids,
            )


class TrajectoryDataset(Dataset):
    """All records of a collection directory, indexable and with stable order (rank, shard, row).

    Args:
        directory: a directory written by :class:`~blockdistill.distill.writer.ShardWriter`.
        verify: check every shard's sha256 up front (recommended; reads each file once).
    """

    def __init__(self, directory: str | Path, verify: bool = True) -> None:
        self.directory = Path(directory)
        if verify:
            entries = verify_collection(self.directory)
        else:
            entries = [{**s, "path": self.directory / s["file"]}
                       for man in read_rank_manifests(self.directory).values() for s in man["shards"]]
            if not entries and not read_rank_manifests(self.directory):
                raise FileNotFoundError(f"{self.directory}: no trajectory manifests (manifest-r*.json)")
        self._shards = [_Shard(e["path"]) for e in entries]
        self._index: list[tuple[int, int]] = []
        seen: dict[str, str] = {}
        for si, (sh, e) in enumerate(zip(self._shards, entries)):
            if sh.ids != e["example_ids"]:
                raise CorruptShardError(f"{sh.path}: example ids differ from those its manifest lists")
            for j, ex in enumerate(sh.ids):
                if ex in seen:
                    raise CorruptShardError(f"example {ex!r} appears in both {seen[ex]} and {sh.path}")
                seen[ex] = str(sh.path)
                self._index.append((si, j))

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> TrajectoryRecord:
        si, j = self._index[i]
        return self._shards[si].read(j)

    @property
    def example_ids(self) -> list[str]:
        return [self._shards[si].ids[j] for si, j in self._index]
