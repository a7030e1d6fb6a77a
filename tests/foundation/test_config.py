"""Configs: YAML + overrides merge, and bad input names the field."""

import pytest

from blockdistill.config import ConfigError, RADTrainConfig, load_config


def test_yaml_and_overrides_merge():
    cfg = load_config(RADTrainConfig, "configs/tiny/rad.yaml", ["block.block_size=8", "optim.lr=1e-4"])
    assert cfg.block.block_size == 8 and cfg.optim.lr == 1e-4 and cfg.model.tiny["hidden_size"] == 64


@pytest.mark.parametrize("override, field", [
    ("block.blok_size=3", "block.blok_size"),
    ("block.block_size=0", "block.block_size"),
    ("optim.lr=abc", "optim.lr"),
    ("optim.lr=-1", "optim.lr"),
    ("layout=diagonal", "layout"),
    ("block.attn_backend=cuda_magic", "block.attn_backend"),
    ("noise.eps=2", "noise.eps"),
    ("trainer.max_steps=0", "trainer.max_steps"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        load_config(RADTrainConfig, "configs/tiny/rad.yaml", [override])


def test_missing_model_and_both_models_are_rejected():
    with pytest.raises(ConfigError, match="^model"):
        load_config(RADTrainConfig)
    with pytest.raises(ConfigError, match="exactly one of model.pretrained and model.tiny"):
        load_config(RADTrainConfig, "configs/tiny/rad.yaml", ["model.pretrained=/x"])


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(RADTrainConfig, "configs/nope.yaml")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(RADTrainConfig, "configs/tiny/rad.yaml", ["optim.lr"])
