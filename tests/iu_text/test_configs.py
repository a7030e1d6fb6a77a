"""The CPU, GPU and bigger-model configs parse; missing weights are reported clearly; levers."""

from pathlib import Path

import pytest
import torch

from blockdistill.config import ConfigError
from examples.iu_text.config import load_text_config
from examples.iu_text.model import (
    build_backbone,
    freeze_embeddings,
    model_source,
    training_precision,
)

CFG = Path("examples/iu_text/configs")


def test_cpu_config_parses():
    cfg = load_text_config(CFG / "cpu")
    assert cfg.model.kind == "smollm2" and cfg.rad.shift and cfg.rad.block_sizes == [4, 8]
    assert cfg.data.test_size >= 200 and cfg.collect.block_size == 8
    assert cfg.eval.variants == ["ar", "base_multistep_L4", "base_multistep_L8", "base_onestep_L8", "echo_onestep_L8"]


def test_gpu_config_is_bf16_on_one_gpu():
    cfg = load_text_config([CFG / "cpu", CFG / "gpu"])
    assert cfg.model.dtype == "bfloat16" and cfg.model.precision == "bf16"
    assert {cfg.ar.trainer.accelerator, cfg.rad.trainer.accelerator, cfg.dcd.trainer.accelerator} == {"gpu"}
    assert training_precision(cfg.model, "gpu") == "bf16-mixed"


def test_bigger_model_config_reports_a_missing_path(tmp_path):
    cfg = load_text_config([CFG / "cpu", CFG / "gpu", CFG / "bigger"], [f"model.path={tmp_path / 'SmolLM2-1.7B'}"])
    assert cfg.model.kind == "pretrained"
    with pytest.raises(FileNotFoundError, match="SmolLM2-1.7B.*not a model folder"):
        model_source(cfg.model)
    with pytest.raises(ConfigError, match="model.path"):
        load_text_config([CFG / "cpu", CFG / "bigger"], ["model.path=null"])


def test_pretrained_path_loads_a_local_causal_lm(tmp_path, tiny_tok):
    tiny = load_text_config([CFG / "cpu", CFG / "tiny"]).model
    model = build_backbone(tiny, tiny_tok)
    model.save_pretrained(tmp_path / "m")
    cfg = load_text_config([CFG / "cpu", CFG / "bigger"], [f"model.path={tmp_path / 'm'}", "model.dtype=float32"])
    loaded = build_backbone(cfg.model, tiny_tok)
    ids = torch.tensor([[3, 4, 5]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_smollm2_resolves_to_the_real_converted_model():
    from transformers import AutoConfig

    cfg = load_text_config(CFG / "cpu")
    path = model_source(cfg.model)
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.vocab_size) == ("llama", 30, 49152)


@pytest.mark.parametrize(("override", "key"), [
    ("collect.block_size=16", "collect.block_size"), ("model.kind=gguf", "model.kind"),
    ("data.embedder=tfidf", "data.embedder"), ("eval.variants=[ar,bogus]", "eval.variants"),
    ("model.precision=fp8", "model.precision"), ("ar.nonsense=1", "nonsense"),
])
def test_bad_values_name_themselves(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_text_config(CFG / "cpu", [override])


def test_freeze_embeddings_freezes_the_tied_matrix_once(tiny_tok):
    cfg = load_text_config([CFG / "cpu", CFG / "tiny"]).model
    model = build_backbone(cfg, tiny_tok)
    emb = model.get_input_embeddings().weight
    assert freeze_embeddings(model) == emb.numel()  # tied: one matrix
    assert not emb.requires_grad and not model.get_output_embeddings().weight.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)


def test_auto_precision_follows_native_bf16():
    from blockdistill.metrics.semscore import native_bf16

    cfg = load_text_config(CFG / "cpu").model
    assert training_precision(cfg, "cpu") == ("bf16-mixed" if native_bf16("cpu") else "32-true")
