"""Damaged images never reach training (issue 19, point 5: images; the readers' full decode).

A CheXpert-Plus-layout data set is generated on disk with real JPEG and PNG files, some damaged
for real: a JPEG cut short, a PNG with one byte of its IDAT data flipped, an emptied file, bytes
that are not an image, and a study whose lateral view alone is a truncated JPEG. The offline
curation (``examples.echo_cxr.data.curate``) rejects each damaged study with its id and the
reason and keeps the good view of the mixed one. The on-access training dataset skips a study
whose image was damaged after curation and lists it in its rejects file.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_bad_input_curated_images.py -q
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from examples.echo_cxr.data.readers import CheXpertPlusReader
from examples.echo_cxr.data.readers.base import image_problem
from examples.echo_cxr.data.records import Rejected

COLUMNS = ["path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id",
           "patient_report_date_order", "report", "section_findings", "section_impression",
           "section_end_of_impression", "section_summary", "age", "sex", "split"]


def _image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((96, 96)) * 255).astype(np.uint8)  # noise: compressed data fills the file
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def flip_idat_byte(png: bytes) -> bytes:
    """Flip one byte in the middle of the first IDAT chunk's data (CRC left as it was)."""
    start = png.index(b"IDAT") + 4
    length = int.from_bytes(png[start - 8 : start - 4], "big")
    pos = start + length // 2
    return png[:pos] + bytes([png[pos] ^ 0xFF]) + png[pos + 1 :]


# study -> [(view file, bytes)]
def _studies() -> dict[str, list[tuple[str, bytes]]]:
    return {
        "patient00001": [("view1_frontal.jpg", _image(1, "JPEG"))],
        "patient00002": [("view1_frontal.jpg", truncated(_image(2, "JPEG")))],
        "patient00003": [("view1_frontal.png", flip_idat_byte(_image(3, "PNG")))],
        "patient00004": [("view1_frontal.jpg", b"")],
        "patient00005": [("view1_frontal.jpg", b"this is a radiology report, not an image\n")],
        "patient00006": [("view1_frontal.jpg", _image(6, "JPEG")), ("view2_lateral.jpg", truncated(_image(7, "JPEG")))],
        "patient00007": [("view1_frontal.png", _image(8, "PNG"))],
    }


FINDINGS = [  # distinct enough that the near-duplicate stage keeps every study
    "Heart size normal. Lungs clear.", "Left basilar atelectasis with small effusion.",
    "Right upper lobe consolidation suggesting pneumonia.", "Cardiomegaly and pulmonary vascular congestion.",
    "Large left pneumothorax with mediastinal shift.", "Endotracheal tube tip above the carina.",
    "Healed rib fractures on the right, no acute osseous abnormality.",
]

EXPECTED = {  # study -> the words its reject reason must hold
    "patient00002/study1": ("corrupt image", "view1_frontal.jpg", "truncated"),
    "patient00003/study1": ("corrupt image", "view1_frontal.png"),
    "patient00004/study1": ("empty image file", "view1_frontal.jpg"),
    "patient00005/study1": ("corrupt image", "view1_frontal.jpg", "UnidentifiedImageError"),
}


def write_chexpert(root: Path) -> Path:
    rows = []
    for i, (patient, views) in enumerate(_studies().items()):
        for name, data in views:
            rel = f"train/{patient}/study1/{name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
            rows.append({**dict.fromkeys(COLUMNS, ""), "path_to_image": rel, "deid_patient_id": patient,
                         "frontal_lateral": "Lateral" if "lateral" in name else "Frontal", "split": "train",
                         "section_findings": FINDINGS[i], "section_impression": f"Impression of case {i}.",
                         "report": f"FINDINGS: case {patient}."})
    with open(root / "df_chexpert_plus_240401.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return root


def test_the_damage_is_real() -> None:
    """Each damaged file is what it claims: the header check passes the truncated JPEG and its
    pixels fail to decode, and the flipped PNG byte breaks the IDAT CRC."""
    png = _image(3, "PNG")
    start = png.index(b"IDAT")
    length = int.from_bytes(png[start - 4 : start], "big")
    bad = flip_idat_byte(png)
    assert zlib.crc32(bad[start : start + 4 + length]) != int.from_bytes(bad[start + 4 + length : start + 8 + length], "big")
    with pytest.raises(OSError, match="truncated"):
        Image.open(io.BytesIO(truncated(_image(2, "JPEG")))).convert("RGB")


def test_the_header_check_passes_a_truncated_jpeg_and_the_decode_check_rejects_it(tmp_path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(truncated(_image(2, "JPEG")))
    assert image_problem(path, "header") is None  # the faster opt-out's documented blind spot
    problem = image_problem(path, "decode")
    assert problem is not None and problem.startswith(f"corrupt image {path} (OSError: image file is truncated")
    good = tmp_path / "good.jpg"
    good.write_bytes(_image(1, "JPEG"))
    assert image_problem(good, "decode") is None and image_problem(good, "header") is None


def test_the_curation_rejects_each_damaged_image_and_keeps_a_studys_good_view(tmp_path) -> None:
    from examples.echo_cxr.data.curate import main as curate_main

    root = write_chexpert(tmp_path / "chexpert")
    out = tmp_path / "curated"
    curate_main(["--out", str(out), "--chexpert", str(root), "--embedder", "hashing",
                 "--eval-size", "0", "--dcd-size", "0"])
    rejects = {r.key: r for r in map(Rejected.from_json, (out / "rejects.jsonl").read_text().splitlines())}
    assert {k.split("/", 1)[1] for k in rejects} == set(EXPECTED)
    for study, words in EXPECTED.items():
        r = rejects[f"chexpert_plus/{study}"]
        assert r.stage == "read" and r.reason.startswith("no readable image: "), r.reason
        assert all(w in r.reason for w in words), (study, r.reason)
    curated = {json.loads(line)["study_id"]: json.loads(line) for line in (out / "curated.jsonl").read_text().splitlines()}
    assert set(curated) == {"patient00001/study1", "patient00006/study1", "patient00007/study1"}
    mixed = curated["patient00006/study1"]
    assert [Path(p).name for p in mixed["image_paths"]] == ["view1_frontal.jpg"]
    (dropped,) = mixed["metadata"]["dropped_images"]
    assert dropped["path"].endswith("view2_lateral.jpg") and "truncated" in dropped["reason"]


def test_header_mode_lets_the_truncated_jpegs_through(tmp_path) -> None:
    """The opt-out's cost, shown: with ``image_check="header"`` the truncated JPEG study is kept
    (with both of the mixed study's views), the PNG CRC, empty and non-image files still go."""
    rejects: list[Rejected] = []
    records = {r.study_id: r for r in CheXpertPlusReader(write_chexpert(tmp_path), image_check="header").read(rejects.append)}
    assert "patient00002/study1" in records and len(records["patient00006/study1"].image_paths) == 2
    assert {r.key.split("/", 1)[1] for r in rejects} == set(EXPECTED) - {"patient00002/study1"}


def test_an_image_over_the_decompression_bomb_limit_is_rejected(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_image(1, "PNG"))  # 96 x 96 = 9216 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # PIL raises above twice the limit
    problem = image_problem(path, "decode")
    assert problem is not None and "DecompressionBombError" in problem and "9216 pixels" in problem


def test_training_skips_a_study_damaged_after_curation_and_lists_it(tmp_path) -> None:
    """On-access decoding (``data.cache_samples=false``): the study whose file was cut after the
    curation is replaced by the next decodable study, written once to the rejects file (stage
    ``load``, study id, file), counted; every other study is served as it is."""
    from examples.echo_cxr.data.dataset import (
        CXRRecordDataset,
        read_records,
        write_synthetic_dataset,
    )
    from examples.echo_cxr.data.processor import CXRProcessor, ImageDecodeError, VisionSettings
    from examples.echo_cxr.data.synthetic import SyntheticConfig
    from examples.echo_cxr.data.tokenizer import tiny_tokenizer

    proc = CXRProcessor(tiny_tokenizer(tmp_path / "tok", n_reports=200), VisionSettings.tiny(64, patch_size=8))
    jsonl = write_synthetic_dataset(tmp_path / "data", 4, seed=0, config=SyntheticConfig(image_size=64), languages=("en",))
    records = read_records(jsonl)
    rejects = tmp_path / "run" / "data" / "train.load-rejects.jsonl"
    clean = [CXRRecordDataset(records, proc)[i] for i in range(4)]
    bad = Path(records[1].image_paths[0])
    bad.write_bytes(truncated(bad.read_bytes()))  # damaged after curation

    ds = CXRRecordDataset(records, proc, rejects_path=rejects)
    served = [ds[i] for i in (0, 1, 2, 3, 1)]
    assert [s["study_id"] for s in served] == [records[i].study_id for i in (0, 2, 2, 3, 2)]
    assert all(np.array_equal(s["pixel_values"], clean[2]["pixel_values"]) for s in (served[1], served[2]))
    (line,) = rejects.read_text().splitlines()  # once, though met twice
    r = Rejected.from_json(line)
    assert r.key == records[1].key and r.stage == "load"
    assert r.reason.startswith(f"study {records[1].key}: undecodable image {bad}") and "truncated" in r.reason
    assert ds.skipped == {records[1].key: r.reason}
    with pytest.raises(ImageDecodeError, match=rf"study {records[1].key}: undecodable image"):
        CXRRecordDataset(records, proc)[1]  # without a rejects file (evaluation): it still stops
