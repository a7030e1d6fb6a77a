"""Issue 16: the CLI reads a saved model's block rules instead of making the user restate them,
reports a contradicting config as one line naming the field (exit 2, no traceback), and
converts AR models with the shifted head alignment unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.cli import main
from blockdistill.distill import TrajectoryDataset
from blockdistill.models.provenance import mark_trained
from blockdistill.recipes import AR_CONVERSION_SHIFT
from blockdistill.testing import tiny_qwen2, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny"


def _words(g: torch.Generator, n: int) -> str:
    return " ".join(f"t{int(t)}" for t in torch.randint(0, 80, (n,), generator=g))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A shift=True, L=8 teacher (not the shipped configs' L=4, shift unset), its tokenizer, prompts
    and prompt/response pairs."""
    root = tmp_path_factory.mktemp("cli_rules")
    tok = tiny_tokenizer()
    teacher = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tok, block_size=8, shift=True)
    mark_trained(teacher, "rad")  # stands in for a RAD-trained teacher (collect refuses an untrained one)
    teacher.save_pretrained(root / "teacher")
    tiny_tokenizer().save_pretrained(root / "tok")
    g = torch.Generator().manual_seed(0)
    with open(root / "prompts.jsonl", "w") as f:
        for i in range(4):
            f.write(json.dumps({"id": f"q{i}", "prompt": _words(g, 3 + i)}) + "\n")
    with open(root / "train.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps({"prompt": _words(g, 3 + i % 4), "response": _words(g, 6)}) + "\n")
    return root


def _common(root: Path) -> list[str]:
    return [f"data.tokenizer={root / 'tok'}", "trainer.enable_progress_bar=false", "data.batch_size=2"]


def test_collect_and_train_dcd_take_block_size_and_shift_from_the_saved_teacher(inputs, tmp_path):
    traj = tmp_path / "traj"
    teacher = [f"model.pretrained={inputs / 'teacher'}", f"data.train_file={inputs / 'prompts.jsonl'}"]
    rc = main(["collect", "-c", str(TINY / "collect.yaml"), *_common(inputs), *teacher, f"output_dir={traj}",
               "decode.repetition_ngram=0", "decode.max_new_tokens=8"])
    assert rc == 0
    manifest = json.loads((traj / "manifest.json").read_text())
    assert manifest["meta"]["block_size"] == 8 and manifest["num_examples"] == 4
    records = TrajectoryDataset(traj)
    assert {r.block_size for r in records} == {8}
    rc = main(["train-dcd", "-c", str(TINY / "dcd.yaml"), *_common(inputs), *teacher, f"trajectories={traj}",
               "trainer.max_steps=1", f"trainer.default_root_dir={tmp_path / 'run'}", f"output_dir={tmp_path / 's'}"])
    assert rc == 0
    student = BlockDiffusionLM.from_pretrained(tmp_path / "s")
    assert student.spec == BlockDiffusionLM.from_pretrained(inputs / "teacher").spec
    assert student.spec.block_size == 8 and student.spec.shift is True


@pytest.mark.parametrize("command, override, field, saved", [
    ("collect", "block.shift=false", "block.shift", "shift=true"),
    ("collect", "block.block_size=4", "block.block_size", "block_size=8"),
    ("train-dcd", "block.shift=false", "block.shift", "shift=true"),
    ("train-dcd", "block.block_size=4", "block.block_size", "block_size=8"),
    ("train-dcd", "block.eos_token_id=3", "block.eos_token_id", "eos_token_id="),
    ("train-dcd", "block.mask_token_id=2", "block.mask_token_id", "mask_token_id="),
])
def test_a_config_contradicting_the_saved_model_is_one_line_naming_the_field(inputs, tmp_path, capsys, command,
                                                                            override, field, saved):
    config = TINY / ("collect.yaml" if command == "collect" else "dcd.yaml")
    extra = ["trajectories=null", f"trainer.default_root_dir={tmp_path / 'run'}"] if command == "train-dcd" else []
    rc = main([command, "-c", str(config), *_common(inputs), f"model.pretrained={inputs / 'teacher'}",
               f"data.train_file={inputs / 'prompts.jsonl'}", *extra, override, f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2
    ours = [line for line in err.splitlines() if line.startswith("blockdistill")]
    assert len(ours) == 1 and ours[0].startswith(f"blockdistill {command}: invalid config: {field}: ")
    assert saved in ours[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_contradiction_through_the_console_entry_point_prints_no_traceback(inputs, tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "blockdistill.cli", "collect", "-c", str(TINY / "collect.yaml"),
                        *_common(inputs), f"model.pretrained={inputs / 'teacher'}",
                        f"data.train_file={inputs / 'prompts.jsonl'}", "block.shift=false",
                        f"output_dir={tmp_path / 'out'}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                            "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "block.shift" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("shift_override, expected", [(None, AR_CONVERSION_SHIFT), ("false", False), ("true", True)])
def test_train_rad_shifts_an_ar_model_by_default_and_honours_an_explicit_value(inputs, tmp_path, shift_override,
                                                                               expected):
    assert AR_CONVERSION_SHIFT is True
    extra = [] if shift_override is None else [f"block.shift={shift_override}"]
    rc = main(["train-rad", "-c", str(TINY / "rad.yaml"), *_common(inputs), f"data.train_file={inputs / 'train.jsonl'}",
               "trainer.max_steps=1", f"trainer.default_root_dir={tmp_path / 'run'}", f"output_dir={tmp_path / 'rad'}",
               *extra])
    assert rc == 0
    saved = BlockDiffusionLM.from_pretrained(tmp_path / "rad").spec
    assert saved.shift is expected and saved.block_size == 4


def test_train_rad_from_a_block_model_keeps_its_shift_and_may_change_block_size(inputs, tmp_path):
    rc = main(["train-rad", "-c", str(TINY / "rad.yaml"), *_common(inputs), "model.tiny=null",
               f"model.pretrained={inputs / 'teacher'}", f"data.train_file={inputs / 'train.jsonl'}",
               "trainer.max_steps=1", f"trainer.default_root_dir={tmp_path / 'run'}", f"output_dir={tmp_path / 'rad'}"])
    assert rc == 0
    saved = BlockDiffusionLM.from_pretrained(tmp_path / "rad").spec
    teacher = BlockDiffusionLM.from_pretrained(inputs / "teacher").spec
    assert saved.shift is True and saved.block_size == 4  # rad.yaml's block size: RAD retrains at it
    assert saved.mask_token_id == teacher.mask_token_id and saved.eos_token_id == teacher.eos_token_id
