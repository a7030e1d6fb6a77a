"""Offline collection: resumable, rank-disjoint, checksummed shards.

Guards against: an interrupted run that loses the records it had decoded or decodes them
twice on resume, a crash between writing a shard and listing it leaving a duplicate behind,
two ranks writing the same example or the same file, degenerate trajectories silently kept
or silently vanished (they must be counted), and corrupted shards being read as data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch

import blockdistill.distill.writer as writer_mod
from blockdistill.distill import (
    CorruptShardError,
    RepetitionFilter,
    ShardWriter,
    TrajectoryCollector,
    TrajectoryDataset,
    collate_prompts,
    collate_records,
    load_records,
)
from blockdistill.distill.filters import find_repetition
from blockdistill.lightning.collect import CollectSystem, PromptDataModule, TrajectoryWriter
from blockdistill.testing.strategies import ToyVocab

VOCAB = ToyVocab(num_content=4, num_prompt=6)
N_PROMPTS = 13
LOOPS = {3, 7}  # prompts whose teacher output is a repetition loop


def toy_teacher():
    """Prompt i = (p_i, p_{i+1}); its block (L = 2) is a content pair, then a second block with EOS;
    prompts in LOOPS answer 'A A A A ...' (a degenerate loop)."""
    a, b, c, d = VOCAB.content
    table = {}
    for i in range(N_PROMPTS):
        prompt = (VOCAB.prompt[i % 6], VOCAB.prompt[(i // 6) % 6], VOCAB.prompt[i % 5])
        width = 2 - len(prompt) % 2
        if i in LOOPS:
            table[prompt] = {(a,) * width: 1.0}
            table[prompt + (a,) * width] = {(a, a): 1.0}
            table[prompt + (a,) * (width + 2)] = {(a, a): 1.0}
        else:
            table[prompt] = {(b,) * width: 0.6, (c,) * width: 0.4}
            for first in ((b,) * width, (c,) * width):
                table[prompt + first] = {(d, VOCAB.eos): 0.7, (a, VOCAB.eos): 0.3}
    return VOCAB.toy(table, block_size=2)


def prompt_rows():
    toy = toy_teacher()
    prompts = [p for p in toy.table if len(p) == 3]
    return [{"id": f"ex{i}", "prompt_ids": list(p)} for i, p in enumerate(prompts)]


class Preempted(RuntimeError):
    pass


class Interrupt(L.Callback):
    """Raises after ``after`` predict batches (a pre-empted job; Lightning turns a real Ctrl-C
    into ``SystemExit`` after the same ``on_exception`` hooks)."""

    def __init__(self, after: int) -> None:
        self.after, self.seen = after, 0

    def on_predict_batch_end(self, trainer, *args, **kwargs) -> None:
        self.seen += 1
        if self.seen == self.after:
            raise Preempted


def run_collect(out: Path, *, batch_size=2, shard_size=3, callbacks=(), **trainer_kw) -> TrajectoryWriter:
    toy = toy_teacher()
    dm = PromptDataModule(prompt_rows(), pad_token_id=VOCAB.eos, batch_size=batch_size, skip_done_in=out)
    system = CollectSystem(toy, max_new_tokens=8, top_k=3)
    writer = TrajectoryWriter(out, shard_size=shard_size, filter=RepetitionFilter(max_ngram=2, repeats=3))
    kw = dict(accelerator="cpu", devices=1, logger=False, enable_model_summary=False, enable_progress_bar=False)
    kw.update(trainer_kw)
    trainer = L.Trainer(callbacks=[writer, *callbacks], **kw)
    trainer.predict(system, dm, return_predictions=False)
    return writer


def check_complete(out: Path) -> dict:
    ds = TrajectoryDataset(out)
    ids = ds.example_ids
    assert len(ids) == len(set(ids)), "duplicated examples"
    summary = json.loads((out / "manifest.json").read_text())
    expected = {r["id"] for r in prompt_rows()}
    dropped = {f"ex{i}" for i in LOOPS}
    assert set(ids) == expected - dropped
    assert summary["num_examples"] == len(expected) - len(dropped)
    assert summary["dropped_by_reason"] == {"repetition": len(dropped)}
    return summary


def test_collection_writes_shards_manifest_and_reads_back(tmp_path) -> None:
    run_collect(tmp_path)
    summary = check_complete(tmp_path)
    assert len(summary["shards"]) == 4  # 11 kept records, 3 per shard
    for s in summary["shards"]:
        assert (tmp_path / s["file"]).is_file() and len(s["sha256"]) == 64
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    ds = TrajectoryDataset(tmp_path)
    rec = ds[0]
    assert rec.target.is_topk and rec.target.k == 3 and rec.finished
    toy = toy_teacher()
    p = rec.target.prob_of(rec.tokens).double().prod()
    assert float(p) == pytest.approx(toy.sequence_prob(rec.prompt_ids.tolist(), rec.tokens.tolist()))
    batch = collate_records([ds[i] for i in range(len(ds))])
    assert batch.kl_mask.any() and batch.eos_mask.any()


def test_collection_logs_progress_lines_without_a_terminal(tmp_path, capsys) -> None:
    """Rank 0 logs the last batch's line (always printed): batches done of all and the writer's
    counts, so a log file shows how far a long collection is."""
    import re

    run_collect(tmp_path)
    err = capsys.readouterr().err
    n_batches = -(-len(prompt_rows()) // 2)
    assert re.search(rf"collect rank 0: {n_batches}/{n_batches} batches .*kept 11 \(9 in shards\), skipped 0, "
                     rf"dropped_repetition "
                     rf"{len(LOOPS)}", err), err


def test_interrupted_collection_resumes_without_loss_or_duplicates(tmp_path) -> None:
    with pytest.raises(Preempted):
        run_collect(tmp_path, callbacks=[Interrupt(after=3)])
    first = TrajectoryDataset(tmp_path).example_ids
    man = json.loads((tmp_path / "manifest-r000.json").read_text())
    done_first = len(first) + len(man["dropped"])
    assert done_first == 6  # 3 batches of 2, flushed on the interrupt (a partial shard)
    writer = run_collect(tmp_path)
    assert writer.writer.written + len(writer.writer.dropped) == N_PROMPTS - done_first, "resume redid finished work"
    check_complete(tmp_path)
    # Running again decodes nothing.
    again = run_collect(tmp_path)
    assert again.writer.written == 0 and not again.writer.dropped
    check_complete(tmp_path)


def test_crash_between_shard_and_manifest_leaves_no_duplicate(tmp_path, monkeypatch) -> None:
    toy = toy_teacher()
    rows = prompt_rows()
    col = TrajectoryCollector(toy, max_new_tokens=8)
    pb = collate_prompts(rows, VOCAB.eos)
    records = col(pb.prompt_ids, pb.prompt_lens, pb.example_ids)
    w = ShardWriter(tmp_path, shard_size=4)
    w.add(records[:4])  # shard 0 listed
    real = writer_mod.atomic_write_text

    def die(path, text):
        raise OSError("disk died")

    monkeypatch.setattr(writer_mod, "atomic_write_text", die)
    with pytest.raises(OSError):
        w.add(records[4:8])  # shard 1 renamed into place, manifest never updated
    monkeypatch.setattr(writer_mod, "atomic_write_text", real)
    assert (tmp_path / "shard-r000-00001.safetensors").is_file()
    w2 = ShardWriter(tmp_path, shard_size=4)  # resume
    assert not (tmp_path / "shard-r000-00001.safetensors").exists(), "orphan shard kept"
    w2.add(records)
    w2.close()
    ids = TrajectoryDataset(tmp_path).example_ids
    assert sorted(ids) == sorted(r.example_id for r in records)


def test_corrupted_shard_is_detected_naming_the_file(tmp_path) -> None:
    run_collect(tmp_path)
    shard = sorted(tmp_path.glob("shard-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=shard.name):
        TrajectoryDataset(tmp_path)
    shard.unlink()
    with pytest.raises(CorruptShardError, match=f"{shard.name}: shard listed in the manifest is missing"):
        TrajectoryDataset(tmp_path)


def test_records_round_trip_without_pickle(tmp_path) -> None:
    toy = toy_teacher()
    pb = collate_prompts(prompt_rows()[:4], VOCAB.eos)
    for top_k in (None, 2):
        recs = TrajectoryCollector(toy, max_new_tokens=8, top_k=top_k, record_first_step=True)(
            pb.prompt_ids, pb.prompt_lens, pb.example_ids)
        recs[1].pixel_values = torch.randn(8, 5)
        recs[1].image_grid_thw = torch.tensor([[1, 2, 4]])
        from blockdistill.distill import save_records

        path = tmp_path / f"r{top_k}.safetensors"
        save_records(path, recs)
        assert path.read_bytes()[:8] != b"\x80\x04\x95"[:8]  # not a pickle
        back = load_records(path)
        for a, b in zip(recs, back):
            assert a.example_id == b.example_id and a.response_len == b.response_len
            for name in ("prompt_ids", "tokens", "commit_step", "block_steps"):
                assert torch.equal(getattr(a, name), getattr(b, name))
            for rows_a, rows_b in ((a.target, b.target), (a.first_step, b.first_step)):
                assert (rows_a.is_topk, rows_a.k, rows_a.vocab_size) == (rows_b.is_topk, rows_b.k, rows_b.vocab_size)
                ta, tb = rows_a.tensors("t"), rows_b.tensors("t")
                assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
        assert torch.equal(back[1].pixel_values, recs[1].pixel_values) and back[0].pixel_values is None


def test_a_trace_over_another_vocabulary_is_refused() -> None:
    """The collector's vocabulary size and the teacher's rows must agree; a mismatch names the example."""
    from blockdistill.distill.collectors import record_from_trace
    from blockdistill.sampling import TraceSpec, block_generate

    toy = toy_teacher()
    pb = collate_prompts(prompt_rows()[:1], VOCAB.eos)
    for top_k in (None, 2):
        trace = block_generate(toy, pb.prompt_ids, pb.prompt_lens, max_new_tokens=4, stop_at_eos=False,
                               record=TraceSpec(top_k=top_k)).traces[0]
        v = trace.commit.vocab_size
        rec = record_from_trace(trace, "ex0", pb.prompt_ids[0], VOCAB.eos, v)
        assert rec.target.vocab_size == v
        with pytest.raises(ValueError, match=f"example 'ex0': the teacher's rows are over {v} tokens but the "
                                             f"vocabulary size is {v + 1}"):
            record_from_trace(trace, "ex0", pb.prompt_ids[0], VOCAB.eos, v + 1)


def test_repetition_detector() -> None:
    assert find_repetition([1, 2, 1, 2, 1, 2], 2, 3) == (0, 2)
    assert find_repetition([5, 1, 1, 1, 1], 1, 4) == (1, 1)
    assert find_repetition([1, 2, 3, 1, 2, 4], 3, 2) is None


def test_two_process_collection_writes_disjoint_complete_shards(tmp_path) -> None:
    """One process is pre-empted early; two processes (DDP spawn, gloo, CPU) resume and finish."""
    with pytest.raises(Preempted):
        run_collect(tmp_path, callbacks=[Interrupt(after=2)])
    before = set(TrajectoryDataset(tmp_path).example_ids)
    os.environ["OMP_NUM_THREADS"] = "1"
    run_collect(tmp_path, batch_size=2, shard_size=2, devices=2, strategy="ddp_spawn")
    summary = check_complete(tmp_path)
    assert summary["ranks"] == [0, 1]
    per_rank: dict[int, set[str]] = {0: set(), 1: set()}
    files: set[str] = set()
    for rank in (0, 1):
        man = json.loads((tmp_path / f"manifest-r{rank:03d}.json").read_text())
        for s in man["shards"]:
            assert s["file"].startswith(f"shard-r{rank:03d}-") and s["file"] not in files
            files.add(s["file"])
            per_rank[rank].update(s["example_ids"])
        per_rank[rank].update(man["dropped"])
    assert per_rank[1] and not per_rank[0] & per_rank[1]
    assert not per_rank[1] & before
    assert per_rank[0] | per_rank[1] == {r["id"] for r in prompt_rows()}
    assert {p.name for p in tmp_path.glob("shard-*")} == files
