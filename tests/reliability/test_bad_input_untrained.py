"""collect and train-dcd refuse a teacher that was never trained as a block-diffusion model.

The rule (``blockdistill.models.provenance``): train-rad, train-dcd and ``load_released`` record
themselves under ``config.json``'s ``"blockdistill_trained"``; a model without that record is
refused, whether it is a plain AR model or one converted with ``from_causal_lm`` and saved
untrained. Everything here goes through the real CLI and real saved directories.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_bad_input_untrained.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blockdistill import BlockDiffusionLM
from blockdistill.cli import main
from blockdistill.models.provenance import TRAINED_KEY, trained_stages
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from tests.reliability.helpers import write_text_data


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("untrained")
    tok, data = write_text_data(root)
    return root, tok, data


def _collect(tok: Path, data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["collect", "-c", "configs/tiny/collect.yaml", f"model.pretrained={model}", f"data.tokenizer={tok}",
            f"data.train_file={data}", f"output_dir={out}", "data.batch_size=2", "decode.repetition_ngram=0",
            "decode.max_new_tokens=8", "trainer.enable_progress_bar=false", *extra]


def _dcd(tok: Path, data: Path, model: Path, tmp: Path) -> list[str]:
    return ["train-dcd", "-c", "configs/tiny/dcd.yaml", f"model.pretrained={model}", f"data.tokenizer={tok}",
            f"data.train_file={data}", "trajectories=null", "trainer.max_steps=1", "data.batch_size=2",
            f"trainer.default_root_dir={tmp / 'run'}", f"output_dir={tmp / 'student'}",
            "trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("kind", ["plain AR", "converted untrained"])
@pytest.mark.parametrize("command", ["collect", "train-dcd"])
def test_a_teacher_without_block_training_is_refused(inputs, tmp_path, capsys, kind, command) -> None:
    root, tok, data = inputs
    model = tmp_path / "model"
    if kind == "plain AR":
        tiny_qwen2().save_pretrained(model)
    else:
        BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4).save_pretrained(model)
    assert TRAINED_KEY not in json.loads((model / "config.json").read_text())
    args = _collect(tok, data, model, tmp_path / "traj", "block.block_size=4") if command == "collect" \
        else _dcd(tok, data, model, tmp_path) + ["block.block_size=4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"model.pretrained={model}" in err and "must be RAD-trained first" in err
    assert ("plain AR model" if kind == "plain AR" else "no record of block-diffusion training") in err
    assert not (tmp_path / "traj").exists() and not (tmp_path / "student").exists(), "nothing is written"


def test_train_rad_records_itself_and_its_output_is_accepted(inputs, tmp_path, capsys) -> None:
    """The whole rule end to end: AR model -> train-rad (2 steps) -> collect -> train-dcd."""
    root, tok, data = inputs
    ar = tmp_path / "ar"
    tiny_qwen2().save_pretrained(ar)
    rad = tmp_path / "rad"
    assert main(["train-rad", "-c", "configs/tiny/rad.yaml", f"model.pretrained={ar}", "model.tiny=null",
                 f"data.tokenizer={tok}", f"data.train_file={data}", "trainer.max_steps=2",
                 "data.batch_size=2", f"trainer.default_root_dir={tmp_path / 'rad_run'}", f"output_dir={rad}",
                 "trainer.enable_progress_bar=false"]) == 0
    assert json.loads((rad / "config.json").read_text())[TRAINED_KEY] == ["rad"]
    assert main(_collect(tok, data, rad, tmp_path / "traj")) == 0
    assert json.loads((tmp_path / "traj" / "manifest.json").read_text())["num_examples"] > 0
    assert main(_dcd(tok, data, rad, tmp_path)) == 0
    assert trained_stages(BlockDiffusionLM.from_pretrained(tmp_path / "student")) == ["rad", "dcd"]
