"""Bad configs name the file, line or field (issue 19, point 5: configs).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_bad_input_config.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blockdistill.cli import main
from blockdistill.config import ConfigError, RADTrainConfig
from blockdistill.config.base import load_config

ROOT = Path(__file__).resolve().parents[2]
RAD = ROOT / "configs" / "tiny" / "rad.yaml"


@pytest.mark.parametrize("override,message", [
    ("model.tiny.hiden_size=32", "model.tiny.hiden_size: not a setting of Qwen2Config; did you mean 'hidden_size'?"),
    ("model.tiny.num_atention_heads=2", "did you mean 'num_attention_heads'?"),
    ("model.tiny.model_type=qwen3x", "model.tiny.model_type: unknown model type 'qwen3x'; did you mean 'qwen3'?"),
])
def test_unknown_keys_under_model_tiny_are_rejected_with_a_suggestion(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RADTrainConfig, RAD, [override])
    assert message in str(info.value)


def test_nested_vision_and_text_settings_are_checked_too() -> None:
    base = ["model.tiny={model_type: qwen2_5_vl, vision_config: {depth: 1, hidden_size: 32}}"]
    cfg = load_config(RADTrainConfig, None, base + ["data.tokenizer=x"])
    assert cfg.model.tiny["vision_config"] == {"depth": 1, "hidden_size": 32}
    with pytest.raises(ConfigError, match=r"model.tiny.vision_config.dept: not a setting of "
                                          r"Qwen2_5_VLVisionConfig; did you mean 'depth'\?"):
        load_config(RADTrainConfig, None, ["model.tiny.model_type=qwen2_5_vl",
                                           "model.tiny.vision_config.dept=1"])
    with pytest.raises(ConfigError, match=r"model.tiny.text_config.hiden_size"):
        load_config(RADTrainConfig, None, ["model.tiny.model_type=qwen2_5_vl",
                                           "model.tiny.text_config.hiden_size=8"])
    # A composite config's top level takes its text model's keys (transformers forwards them).
    cfg = load_config(RADTrainConfig, None, ["model.tiny.model_type=qwen2_5_vl", "model.tiny.hidden_size=48"])
    assert cfg.model.tiny["hidden_size"] == 48


def test_dictionary_settings_are_overridden_from_the_command_line() -> None:
    by_key = load_config(RADTrainConfig, RAD, ["model.tiny.hidden_size=32", "model.tiny.num_hidden_layers=1"])
    assert by_key.model.tiny["hidden_size"] == 32 and by_key.model.tiny["num_hidden_layers"] == 1
    assert by_key.model.tiny["vocab_size"] == 96, "the file's other keys stay"
    flow = load_config(RADTrainConfig, RAD, ["model.tiny={model_type: llama, hidden_size: 16}"])
    assert flow.model.tiny["model_type"] == "llama" and flow.model.tiny["hidden_size"] == 16
    with pytest.raises(ConfigError, match=r"override 'model.tiny=\{model_type: llama'.*not valid YAML"):
        load_config(RADTrainConfig, RAD, ["model.tiny={model_type: llama"])


@pytest.mark.parametrize("text,where,why", [
    ("optim:\n  lr: 1e-3\n   warmup_ratio: [\n", ":3:", "malformed YAML: mapping values are not allowed"),
    ("optim:\n  lr: 1\noptim:\n  lr: 2\n", ":3:1:", "found duplicate key optim"),
    ("block:\n  block_size: [4\n", ":3:", "malformed YAML"),
    ("- optim\n- block\n", "", "expected a mapping of settings at the top level"),
])
def test_a_malformed_yaml_file_names_file_and_line(tmp_path: Path, text: str, where: str, why: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(RADTrainConfig, [RAD, path])
    assert f"{path}{where}" in str(info.value) and why in str(info.value)


def test_a_non_utf8_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("optim:\n  lr: 1e-3  # réglé\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path}: not UTF-8 text \(byte b'\\xe9' at offset 22\)"):
        load_config(RADTrainConfig, path)


def test_the_cli_reports_a_malformed_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "rad.yaml"
    path.write_text(RAD.read_text().replace("  block_size: 4", "  block_size: 4\n bad"))
    assert main(["train-rad", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{path}:" in err and "malformed YAML" in err
    assert main(["train-rad", "-c", str(RAD), "model.tiny.hiden_size=8"]) == 2
    assert "did you mean 'hidden_size'" in capsys.readouterr().err
