"""Backbone and tokenizer loading from configs and local directories."""

import pytest
import torch

from blockdistill.config import ModelConfig
from blockdistill.models.backbones import load_backbone, load_tokenizer
from blockdistill.testing import tiny_qwen2, tiny_tokenizer


def test_tokenizer_saved_next_to_a_model_config_reloads_exactly(tmp_path):
    """Guards against AutoTokenizer picking Qwen2Tokenizer from config.json and emptying a word-level vocab."""
    tok = tiny_tokenizer()
    tiny_qwen2().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again("t5 t7 t12")["input_ids"] == tok("t5 t7 t12")["input_ids"] == [5, 7, 12]
    assert again.eos_token_id == tok.eos_token_id and len(again) == len(tok)


def test_tiny_backbone_from_config_uses_the_init_range():
    cfg = ModelConfig(tiny={"model_type": "qwen2", "vocab_size": 50, "hidden_size": 32, "intermediate_size": 64,
                            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
                      init_range=0.2)
    model = load_backbone(cfg)
    assert model.config.initializer_range == 0.2
    assert 0.15 < float(model.model.layers[0].mlp.up_proj.weight.std()) < 0.25
    assert next(model.parameters()).dtype == torch.float32


def test_missing_checkpoint_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a local directory"):
        load_backbone(ModelConfig(pretrained="nonexistent-dir"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
