"""Issue 19 §3: resuming ``collect`` verifies the shards already there and regenerates damaged
ones; it refuses a directory another teacher, policy or decode settings produced.

A real ``blockdistill collect`` process is SIGKILLed after its third batch (three shards of two
records on disk and listed), then one listed shard gets a flipped byte and another is cut in
half. Rerunning the command must regenerate exactly those shards' examples and end with the
same records as an uninterrupted collection (ids, tokens and steps exactly; probabilities up to
float32 rounding, since a regenerated example is decoded in another batch).
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.cli import main
from blockdistill.distill.dataset import TrajectoryDataset
from blockdistill.distill.writer import CollectionMismatchError, ShardWriter, done_ids
from blockdistill.models.provenance import mark_trained
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from tests.reliability.helpers import run_faulty, write_teacher, write_text_data
from tests.reliability.test_damaged import flip, truncate


def collect_args(tok, data, teacher, out, *extra):
    return ["collect", "--config", "configs/tiny/collect.yaml", f"model.pretrained={teacher}", f"data.tokenizer={tok}",
            f"data.train_file={data}", f"output_dir={out}", "data.batch_size=2", "shard_size=2",
            "decode.repetition_ngram=0", "trainer.enable_progress_bar=false", *extra]


def flat(record) -> dict:
    """Every field of a record (its row type's tensors included) by name."""
    out = {}
    for f in dataclasses.fields(record):
        v = getattr(record, f.name)
        if dataclasses.is_dataclass(v):
            out.update({f"{f.name}.{k}": w for k, w in flat(v).items()})
        else:
            out[f.name] = v
    return out


def records(directory) -> dict[str, dict]:
    ds = TrajectoryDataset(directory)
    return {r.example_id: flat(r) for r in (ds[i] for i in range(len(ds)))}


def check_same(full: dict, resumed: dict) -> None:
    """Every id, token, commit step and integer field equal; the teacher's probabilities equal up
    to float32 rounding (a regenerated example is decoded in another batch, padded to another
    width, so its row sums may round differently: measured max 2.2e-8)."""
    assert full.keys() == resumed.keys()
    for k in full:
        a, b = full[k], resumed[k]
        assert a.keys() == b.keys()
        for f in a:
            if isinstance(a[f], torch.Tensor) and a[f].is_floating_point():
                torch.testing.assert_close(a[f], b[f], rtol=0, atol=1e-6, msg=f"{k} {f}")
            elif isinstance(a[f], torch.Tensor):
                assert torch.equal(a[f], b[f]), (k, f)
            else:
                assert a[f] == b[f], (k, f)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("collect")
    tok, data = write_text_data(root)
    teacher = write_teacher(root)
    assert main(collect_args(tok, data, teacher, root / "full")) == 0
    return root, tok, data, teacher


def test_killed_collect_with_damaged_shards_regenerates_them(inputs, tmp_path):
    root, tok, data, teacher = inputs
    out = tmp_path / "traj"
    res = run_faulty("cli", collect_args(tok, data, teacher, out), kill_after_batches=3)
    assert res.returncode == -9, res.stderr[-2000:]
    man = json.loads((out / "manifest-r000.json").read_text())
    assert [s["file"] for s in man["shards"]] == [f"shard-r000-{i:05d}.safetensors" for i in range(3)]
    assert not (out / "manifest.json").exists()  # killed before the end
    flip(out / man["shards"][0]["file"])
    truncate(out / man["shards"][2]["file"])
    lost = set(man["shards"][0]["example_ids"]) | set(man["shards"][2]["example_ids"])
    assert not lost & done_ids(out)  # a damaged shard's examples are not done
    assert set(man["shards"][1]["example_ids"]) <= done_ids(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(collect_args(tok, data, teacher, out)) == 0
    said = " ".join(str(w.message) for w in caught)
    assert f"{man['shards'][0]['file']}: sha256" in said and f"{man['shards'][2]['file']}: sha256" in said
    summary = json.loads((out / "manifest.json").read_text())
    assert sorted((r["file"], r["examples"]) for r in summary["regenerated"]) == [
        (man["shards"][0]["file"], 2), (man["shards"][2]["file"], 2)]
    assert all("truncated or modified" in r["reason"] for r in summary["regenerated"])
    full, resumed = records(root / "full"), records(out)
    assert len(full) == 16
    check_same(full, resumed)


def test_an_emptied_shard_is_regenerated(inputs, tmp_path):
    root, tok, data, teacher = inputs
    out = tmp_path / "traj"
    assert main(collect_args(tok, data, teacher, out, "shard_size=4")) == 0
    shard = out / "shard-r000-00001.safetensors"
    shard.write_bytes(b"")
    with pytest.warns(UserWarning, match="empty"):
        assert main(collect_args(tok, data, teacher, out, "shard_size=4")) == 0
    check_same(records(root / "full"), records(out))


def test_appending_with_other_decode_settings_is_refused(inputs, tmp_path, capsys):
    root, tok, data, teacher = inputs
    out = tmp_path / "traj"
    assert main(collect_args(tok, data, teacher, out)) == 0
    before = sorted(p.name for p in out.iterdir())
    assert main(collect_args(tok, data, teacher, out, "decode.tau=0.5")) == 2
    err = capsys.readouterr().err
    assert "decode.tau: 0.85 there, 0.5 in this run" in err and "ConfidenceThreshold(tau=0.85" in err, err
    assert "manifest-r000.json" in err and "use a new output_dir" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_appending_with_another_teacher_is_refused(inputs, tmp_path, capsys):
    root, tok, data, teacher = inputs
    other = BlockDiffusionLM.from_causal_lm(tiny_qwen2(seed=1), tiny_tokenizer(), block_size=4)
    mark_trained(other, "rad")  # a second (stand-in) RAD-trained teacher
    other.save_pretrained(tmp_path / "other", tokenizer=tiny_tokenizer())
    out = tmp_path / "traj"
    assert main(collect_args(tok, data, teacher, out)) == 0
    assert main(collect_args(tok, data, tmp_path / "other", out)) == 2
    err = capsys.readouterr().err
    assert "teacher_weights_sha256:" in err and "decode.tau" not in err and "policy" not in err, err
    recorded = json.loads((out / "manifest.json").read_text())["producer"]["teacher_weights_sha256"]
    assert recorded in err


def test_a_collection_without_a_recorded_producer_is_not_appended_to(inputs, tmp_path):
    root, tok, data, teacher = inputs
    ds = TrajectoryDataset(root / "full")
    w = ShardWriter(tmp_path, shard_size=4)  # the library used directly: no producer recorded
    w.add([ds[0], ds[1]])
    w.close()
    with pytest.raises(CollectionMismatchError, match="records no producer"):
        ShardWriter(tmp_path, producer={"teacher_weights_sha256": "0" * 64})


def test_a_resume_on_fewer_ranks_regenerates_the_missing_ranks_damaged_shard(inputs, tmp_path):
    """Two ranks wrote shards; rank 1's is damaged; the resume runs on one process: rank 0 takes
    rank 1's damaged shard out of its manifest, so the merge sees every id once."""
    from blockdistill.distill.writer import finalize_manifest

    root, *_ = inputs
    ds = TrajectoryDataset(root / "full")
    recs = [ds[i] for i in range(8)]
    for rank, part in ((0, recs[0:4]), (1, recs[4:8])):
        w = ShardWriter(tmp_path, rank=rank, shard_size=2)
        w.add(part)
        w.close()
    flip(tmp_path / "shard-r001-00001.safetensors")  # holds recs[6:8]
    with pytest.warns(UserWarning, match="shard-r001-00001.safetensors: sha256"):
        w = ShardWriter(tmp_path, rank=0, shard_size=2, world_size=1)
    assert {r.example_id for r in recs[6:8]}.isdisjoint(done_ids(tmp_path))
    w.add(recs)  # the resumed run's rank 0 is given every prompt not done
    w.close()
    assert w.written == 2 and w.skipped == 6
    summary = finalize_manifest(tmp_path)
    assert summary["num_examples"] == 8 and [r["file"] for r in summary["regenerated"]] == ["shard-r001-00001.safetensors"]
    assert sorted(TrajectoryDataset(tmp_path).example_ids) == sorted(r.example_id for r in recs)
