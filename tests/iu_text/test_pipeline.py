"""Every stage on a handful of real IU-Xray studies with the tiny stand-in, then resume per stage."""

import json
from pathlib import Path

import pytest

from examples.iu_text.config import STAGES, load_text_config
from examples.iu_text.pipeline import run
from examples.iu_text.stages import LengthBucketSampler

CFG = [Path("examples/iu_text/configs/cpu"), Path("examples/iu_text/configs/tiny")]
VARIANTS = ["ar", "base_multistep_L4", "base_multistep_L8", "base_onestep_L8", "echo_onestep_L8"]


@pytest.fixture(scope="module")
def done_run(few_reports, tmp_path_factory):
    root = tmp_path_factory.mktemp("iu_text_run")
    overrides = [f"run_dir={root}", f"data.reports={few_reports}"]
    cfg = load_text_config(CFG, overrides)
    logs: list[str] = []
    run(cfg, started_at=0.0, log=logs.append)
    return root, overrides, logs


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_stage_ran_and_wrote_its_outputs(done_run):
    root, _, logs = done_run
    manifest = json.loads((root / "manifest.json").read_text())
    assert [s for s in STAGES if manifest[s]["status"] == "done"] == list(STAGES)
    for name in ("ar", "rad_L4", "rad_L8", "dcd_L8"):
        assert (root / name / "model" / "config.json").is_file()
    assert manifest["collect"]["summary"]["examples"] >= 1
    assert (root / "report.md").is_file() and (root / "plots" / "quality_vs_speed.png").is_file()


def test_the_test_split_is_held_out(done_run):
    root, _, _ = done_run
    test = {r["key"] for r in _jsonl(root / "data" / "test.jsonl")}
    train = {r["key"] for r in _jsonl(root / "data" / "train.jsonl")}
    dcd = {r["key"] for r in _jsonl(root / "data" / "dcd.jsonl")}
    assert test and train and not test & train and dcd <= train
    from blockdistill.distill.dataset import TrajectoryDataset

    trajectories = TrajectoryDataset(root / "traj_L8")
    traj_ids = {trajectories[i].example_id for i in range(len(trajectories))}
    assert traj_ids and traj_ids <= dcd


def test_results_hold_every_metric_and_the_targets(done_run):
    root, _, _ = done_run
    res = json.loads((root / "results.json").read_text())
    assert [r["variant"] for r in res["rows"]] == VARIANTS
    for r in res["rows"]:
        for k in ("clinical_macro_f1", "rouge_l", "bleu4", "cider_d", "repetition_rate", "tokens_per_s_decode",
                  "tpf", "nfe"):
            assert isinstance(r[k], float) and r[k] >= 0, (r["variant"], k)
        assert r["n"] == res["n_test"]
    one = {r["variant"]: r for r in res["rows"]}
    assert 1.0 <= one["ar"]["tpf"] < 1.2  # one token per forward, plus the one the prefill yields
    assert one["echo_onestep_L8"]["nfe"] < one["ar"]["nfe"]
    lim = res["speed"]["forward_cost_limit"]
    assert lim["limit"] == pytest.approx(8 * lim["t1_s"] / lim["t2L_s"])
    assert [t["name"] for t in res["targets"]] == ["student_f1_vs_ar", "student_rouge_vs_ar", "onestep_gap",
                                                   "repetition_margin", "fused_vs_ar"]
    f1 = next(t for t in res["targets"] if t["name"] == "student_f1_vs_ar")
    ar, st = one["ar"]["clinical_macro_f1"], one["echo_onestep_L8"]["clinical_macro_f1"]
    assert f1["measured"] == (pytest.approx(st / ar) if ar else None)
    assert res["wall"]["command_s"] > res["wall"]["stages_total_s"] > 0
    ceiling = res["labeler_ceiling"]
    assert ceiling["test"]["n"] == res["n_test"] and 0 <= ceiling["test"]["macro"]["f1"] <= 1
    assert "Labeler" in (root / "report.md").read_text() or "labeler" in (root / "report.md").read_text()


def test_rerun_skips_finished_stages(done_run):
    root, overrides, _ = done_run
    before = (root / "dcd_L8" / "model" / "config.json").stat().st_mtime_ns
    logs: list[str] = []
    run(load_text_config(CFG, overrides), log=logs.append)
    assert all("skipped" in line for line in logs) and len(logs) == len(STAGES)
    assert (root / "dcd_L8" / "model" / "config.json").stat().st_mtime_ns == before


def test_a_changed_stage_reruns_with_what_follows(done_run):
    root, overrides, _ = done_run
    teacher = (root / "rad_L8" / "model" / "config.json").stat().st_mtime_ns
    logs: list[str] = []
    cfg = load_text_config(CFG, [*overrides, "dcd.trainer.max_steps=2"])
    run(cfg, stages=("data", "ar", "rad", "collect", "dcd"), log=logs.append)
    assert [line.split(":")[0] for line in logs if "running" in line] == ["[iu_text] dcd"]
    assert (root / "rad_L8" / "model" / "config.json").stat().st_mtime_ns == teacher
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["dcd"]["summary"]["steps"] == 2


def test_an_interrupted_stage_resumes_from_its_checkpoint(done_run):
    root, overrides, _ = done_run
    cfg = load_text_config(CFG, overrides)
    m = json.loads((root / "manifest.json").read_text())
    m["ar"]["status"] = "running"  # as if killed after its last checkpoint
    (root / "manifest.json").write_text(json.dumps(m))
    ckpt = root / "ar" / "train" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    logs: list[str] = []
    run(cfg, stages=("ar",), log=logs.append)
    assert logs[0] == "[iu_text] ar: resuming"
    assert ckpt.is_file() and json.loads((root / "manifest.json").read_text())["ar"]["status"] == "done"


def test_length_buckets_cover_every_index_and_cut_padding():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(10, 300) for _ in range(203)]
    s = LengthBucketSampler(lengths, batch_size=8, seed=1, pool_batches=10, drop_last=False)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(203)) and len(batches) == len(s)
    assert list(s) != batches  # reshuffled every epoch

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    idx = list(range(203))
    rng.shuffle(idx)
    plain = [idx[i:i + 8] for i in range(0, 203, 8)]
    assert padding(batches) < 0.5 * padding(plain)
    dropped = LengthBucketSampler(lengths, batch_size=8, drop_last=True)
    assert all(len(b) == 8 for b in dropped) and len(list(dropped)) == len(dropped) == 203 // 8
