"""``python -m examples.echo_cxr predict`` on a tiny run: one study streamed, many studies batched,
every variant, and unreadable studies recorded without stopping the run."""

import json
from dataclasses import replace

import pytest

from examples.echo_cxr.__main__ import main as echo_main
from examples.echo_cxr.data.synthetic import generate_sample
from examples.echo_cxr.predict import Predictor, run_predict
from tests.echo_cxr.tiny_run import CONFIGS, make_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    make_tiny_run(root / "run", root / "tok")
    imgs = root / "imgs"
    imgs.mkdir()
    for k in range(4):
        generate_sample(10 + k).to_pil().save(imgs / f"s{k}.png")
    (imgs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 20)
    return root


def _args(run, *rest):
    return ["predict", "-c", str(CONFIGS / "smoke"), "--set", f"run_dir={run / 'run'}",
            "--set", "eval.max_new_tokens=24", *rest]


def test_one_study_streams_to_the_terminal_and_writes_a_record(run, capsys):
    out = run / "one.jsonl"
    assert echo_main(_args(run, str(run / "imgs" / "s0.png"), str(run / "imgs" / "s1.png"), "--out", str(out))) == 0
    printed = capsys.readouterr()
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["sample_id"] == "s0" and rec["images"] == ["imgs/s0.png", "imgs/s1.png"]
    assert rec["output"] and printed.out.strip() == rec["output"]  # streamed text is the report
    assert rec["variant"] == "echo_onestep_L8" and rec["tokens"] >= 1
    # one step per block, fused cache: one forward per block (+ prefill); TPF counts decode forwards
    blocks = rec["nfe"] - 1
    assert blocks == -(-rec["tokens"] // 8) or blocks == -(-rec["tokens"] // 8) + 1
    assert rec["tpf"] == pytest.approx(rec["tokens"] / blocks) and rec["tokens_per_s"] > 0
    assert set(rec) >= {"findings", "impression"}
    summary = json.loads(printed.err.strip().splitlines()[-1])
    assert (summary["studies"], summary["reports"], summary["errors"]) == (1, 1, 0)


def _records(run):
    entries = [
        {"sample_id": "a", "images": ["../imgs/s0.png", "../imgs/s1.png"],
         "ground_truth": {"findings": "Lungs are clear.", "impression": "Normal."}},
        {"sample_id": "bad", "images": ["../imgs/corrupt.png"], "ground_truth": {"findings": "x", "impression": "y"}},
        {"sample_id": "b", "images": ["../imgs/s2.png"], "ground_truth": {"findings": "心影不大。", "impression": "正常。"}},
        {"sample_id": "gone", "images": ["../imgs/missing.png"], "ground_truth": {}},
        {"sample_id": "none", "images": [], "ground_truth": {}},
        {"sample_id": "c", "images": ["../imgs/s3.png"], "ground_truth": {"findings": "Effusion.", "impression": ""}},
    ]
    (run / "jsons").mkdir(exist_ok=True)
    path = run / "jsons" / "test.json"
    path.write_text(json.dumps(entries, ensure_ascii=False))
    return path


def test_many_studies_batched_errors_recorded_and_counted(run, capsys):
    path = _records(run)
    outs = {}
    for bs in (1, 3):
        out = run / f"many_bs{bs}.json"
        assert echo_main(_args(run, "--records", str(path), "--batch-size", str(bs), "--out", str(out))) == 0
        outs[bs] = json.loads(out.read_text())
        summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (summary["studies"], summary["reports"], summary["errors"]) == (6, 3, 3)
        assert json.loads((run / f"many_bs{bs}.summary.json").read_text()) == summary
    rows = outs[3]
    assert [r["sample_id"] for r in rows] == ["a", "bad", "b", "gone", "none", "c"]  # input order kept
    errors = {r["sample_id"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"bad", "gone", "none"}
    assert "UnidentifiedImageError" in errors["bad"] or "cannot identify" in errors["bad"]
    assert "missing.png" in errors["gone"] and "no images" in errors["none"]
    assert rows[0]["ground_truth"] == {"findings": "Lungs are clear.", "impression": "Normal."}
    assert rows[2]["language"] == "zh" and rows[0]["images"] == ["imgs/s0.png", "imgs/s1.png"]
    # a batch decodes what each study decodes alone, and each study keeps its own forward count
    for r1, r3 in zip(outs[1], rows):
        assert r1.get("output") == r3.get("output") and r1.get("nfe") == r3.get("nfe")
    assert {r["batch_size"] for r in rows if "error" not in r} == {3} and {r["batch_size"] for r in outs[1]
                                                                             if "error" not in r} == {1}


@pytest.mark.parametrize("variant,policy", [("ar", "ar"), ("base_multistep_L8", "threshold"),
                                            ("base_onestep_L8", "one_step"), ("base_multistep_L4", "threshold")])
def test_every_variant_predicts(run, variant, policy):
    from examples.echo_cxr.config import load_echo_config

    cfg = load_echo_config(CONFIGS / "smoke", all_stages=True,
                           overrides=[f"run_dir={run / 'run'}", "eval.max_new_tokens=16"])
    pred = Predictor(cfg, variant)
    assert pred.policy == policy
    studies = [{"sample_id": "s", "images": [str(run / "imgs" / "s0.png")], "language": "en"}]
    summary = run_predict(pred, studies, run / f"{variant}.jsonl")
    (rec,) = [json.loads(line) for line in (run / f"{variant}.jsonl").read_text().splitlines()]
    assert summary["reports"] == 1 and rec["tokens"] >= 1
    if variant == "ar":
        assert rec["nfe"] == rec["tokens"] and rec["tpf"] == pytest.approx(1.0 * rec["tokens"] / (rec["nfe"] - 1))


def test_missing_model_is_a_clear_error(run, tmp_path, capsys):
    assert echo_main(["predict", "-c", str(CONFIGS / "smoke"), "--set", f"run_dir={tmp_path}",
                      str(run / "imgs" / "s0.png")]) == 2
    assert "holds no model" in capsys.readouterr().err


def test_released_checkpoint_predicts_without_remote_code(run, capsys):
    """A checkpoint in ECHO's layout (auto_map to a trap, <|MASK|>, legacy weight names) goes through
    the interop loader: no shift, block size from the variant, and the same report as decoding the
    in-memory model it was written from."""
    from blockdistill import BlockDiffusionLM
    from blockdistill.models.adapter import BlockSpec
    from examples.echo_cxr.config import load_echo_config
    from tests.echo_cxr.tiny_run import write_released_checkpoint

    ckpt = run / "released"
    model, tok = write_released_checkpoint(ckpt, run / "tok")
    out = run / "released.jsonl"
    img = str(run / "imgs" / "s2.png")
    args = _args(run, "--model", str(ckpt), "--set", "model.mask_token=<|MASK|>", img, "--out", str(out))
    assert echo_main(args) == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    capsys.readouterr()
    cfg = load_echo_config(CONFIGS / "smoke", all_stages=True,
                           overrides=[f"run_dir={run / 'run'}", "eval.max_new_tokens=24", "model.mask_token=<|MASK|>"])
    pred = Predictor(cfg, model_dir=ckpt)
    assert pred.released and pred.model.spec.block_size == 8 and not pred.model.spec.shift
    assert pred.model.spec.mask_token_id == tok.convert_tokens_to_ids("<|MASK|>")
    prompt = pred.prompt([img], "en")
    spec = BlockSpec(8, tok.convert_tokens_to_ids("<|MASK|>"), tok.eos_token_id, tok.pad_token_id, shift=False)
    texts = {}
    for shift in (False, True):
        ref = Predictor.__new__(Predictor)
        ref.cfg, ref.policy, ref.device, ref.tokenizer = cfg, "one_step", "cpu", tok
        ref.model = BlockDiffusionLM(model, replace(spec, shift=shift)).eval()
        texts[shift] = ref.decode([prompt])[0]["output"]
    assert rec["output"] == texts[False] and texts[False] != texts[True]  # no shift, as ECHO decodes
    assert rec["nfe"] >= 2 and rec["tokens"] >= 1
    # a released block checkpoint is not an AR model
    assert echo_main(_args(run, "--model", str(ckpt), "--variant", "ar", img)) == 2
    assert "block variant" in capsys.readouterr().err


def test_readme_predict_lines_on_a_demo_layout(run, monkeypatch, capsys):
    """The README's predict lines (tiny config, the paths ``make demo`` writes) on a run laid out as the
    demo lays it out (its data stage's synthetic eval studies, models where the stages save them)."""
    import re
    import shutil
    from pathlib import Path

    from examples.echo_cxr.data.dataset import write_synthetic_dataset

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = re.findall(r"^PYTHONPATH=src:\. \.venv/bin/python -m examples\.echo_cxr (predict .*)$", readme, re.M)
    assert len(lines) == 2
    demo = run / "cwd" / "runs" / "demo"
    if not demo.exists():
        shutil.copytree(run / "run", demo)
        write_synthetic_dataset(demo / "data" / "eval", 3, seed=1)  # the data stage: seed + 1, syn1_*
        (run / "cwd" / "examples").symlink_to(CONFIGS.parents[2] / "examples")  # run from a repository root
    monkeypatch.chdir(run / "cwd")
    for line in lines:
        argv = line.split()  # the default config is the tiny demo's (run_dir runs/demo)
        assert echo_main([*argv, "--set", "eval.max_new_tokens=16"]) == 0
        summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        # the data stage writes one record per study and language (en + zh share the image): 3 x 2
        assert summary["errors"] == 0 and summary["reports"] == (1 if "--records" not in argv else 6)
        assert Path(summary["out"]) == Path("runs/demo/predict/echo_onestep_L8.jsonl")
        rows = [json.loads(x) for x in Path(summary["out"]).read_text().splitlines()]
        if "--records" in argv:
            assert sorted(r["language"] for r in rows) == ["en"] * 3 + ["zh"] * 3
            assert all(r["images"] == [f"../data/eval/images/{r['sample_id'].split('#')[0]}.png"] for r in rows)
