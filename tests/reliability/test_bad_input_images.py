"""A truncated or undecodable image is caught where it is first decoded (issue 19, point 5: images).

Real PNG files of a synthetic ECHO data set are damaged on disk (cut in half, emptied, replaced
by text); the ECHO data stage (``CachedSamples``, what ``ws.samples`` builds) drops each such
study before training into the rejects file with its study id, and the on-access dataset names
the study in its error.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_bad_input_images.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.echo_cxr.data.dataset import CXRRecordDataset, read_records, write_synthetic_dataset
from examples.echo_cxr.data.processor import CXRProcessor, ImageDecodeError, VisionSettings
from examples.echo_cxr.data.records import Rejected
from examples.echo_cxr.data.synthetic import SyntheticConfig
from examples.echo_cxr.data.tokenizer import tiny_tokenizer
from examples.echo_cxr.workspace import CachedSamples


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"), n_reports=200)
    return CXRProcessor(tok, VisionSettings.tiny(64, patch_size=8), max_images=1)


def _damaged_set(root: Path) -> tuple[list, dict[str, str]]:
    write_synthetic_dataset(root, 6, seed=0, config=SyntheticConfig(image_size=64))
    records = [r for r in read_records(next(root.glob("*.jsonl"))) if r.language == "en"]
    damage = {}
    for record, how in zip(records[1:4], ("truncate", "empty", "garbage")):
        path = Path(record.image_paths[0])
        data = path.read_bytes()
        path.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"not a png"}[how])
        damage[record.key] = how
    return records, damage


def test_the_data_stage_drops_damaged_images_into_the_rejects_file(tmp_path, proc) -> None:
    records, damage = _damaged_set(tmp_path / "data")
    rejects = tmp_path / "train.rejects.jsonl"
    samples = CachedSamples(records, proc, rejects_path=rejects)
    assert len(samples) == len(records) - 3 and {r.key for r in samples.records}.isdisjoint(damage)
    saved = [Rejected.from_json(line) for line in rejects.read_text().splitlines()]
    assert {r.key: r.stage for r in saved} == {k: "data" for k in damage}
    for r in saved:
        assert r.reason.startswith(f"study {r.key}: ") and Path(records[0].image_paths[0]).parent.name in r.reason
        assert ("empty image" if damage[r.key] == "empty" else "undecodable image") in r.reason, r.reason
    assert all(len(s["response_ids"]) > 0 for s in samples.samples)


def test_an_undamaged_set_writes_an_empty_rejects_file(tmp_path, proc) -> None:
    write_synthetic_dataset(tmp_path / "data", 2, seed=1, config=SyntheticConfig(image_size=64))
    records = read_records(next((tmp_path / "data").glob("*.jsonl")))
    samples = CachedSamples(records, proc, rejects_path=tmp_path / "r.jsonl")
    assert len(samples) == len(records) and (tmp_path / "r.jsonl").read_text() == ""


def test_on_access_decoding_names_the_study(tmp_path, proc) -> None:
    records, damage = _damaged_set(tmp_path / "data")
    ds = CXRRecordDataset(records, proc)
    assert ds[0]["prompt_ids"].numel() > 0
    with pytest.raises(ImageDecodeError, match=rf"study {records[1].key}: undecodable image .*\.png"):
        ds[1]
