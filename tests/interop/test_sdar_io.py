"""SDAR-layout and ECHO-layout checkpoints in, SDAR layout out, and the round trip.

Guards against: a loader that executes ``auto_map`` code (each checkpoint here ships a trap
module), weights silently left at their random init or silently dropped (strict names), block
rules guessed instead of read (block size, mask id, shift), an export a shift model slips
through, and an export whose reload decodes differently from the model that was exported.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from blockdistill import BlockDiffusionLM
from blockdistill.interop import CheckpointError, export_sdar, load_released, load_sdar
from blockdistill.sampling import HFDenoiser, block_generate
from blockdistill.sampling.policies import ConfidenceThreshold, OneStep
from tests.interop.helpers import (
    MASK,
    tiny_qwen3,
    write_echo_checkpoint,
    write_sdar_checkpoint,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_import_sdar_reads_block_rules_and_every_weight(tmp_path) -> None:
    ref, tok = write_sdar_checkpoint(tmp_path / "sdar", block_size=4)
    bd, tok2 = load_sdar(tmp_path / "sdar")
    assert type(bd.model).__name__ == "Qwen3ForCausalLM"
    assert bd.spec.block_size == 4 and bd.spec.shift is False
    assert bd.spec.mask_token_id == 96 == tok2.convert_tokens_to_ids(MASK)
    assert bd.spec.eos_token_id == tok.eos_token_id
    _same_weights(bd.model, ref)
    ids = torch.randint(0, 80, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(bd.model(ids).logits, ref(ids).logits)
    # The native save of the import loads with the plain blockdistill loader.
    bd.save_pretrained(tmp_path / "native", tokenizer=tok2)
    again = BlockDiffusionLM.from_pretrained(tmp_path / "native")
    assert again.spec == bd.spec
    _same_weights(again.model, ref)


def test_import_sdar_tied_embeddings_and_mask_from_tokenizer_only(tmp_path) -> None:
    ref, _ = write_sdar_checkpoint(tmp_path / "s", tie=True, mask_in_config=False)
    bd, _ = load_sdar(tmp_path / "s")
    assert bd.spec.mask_token_id == 96
    assert bd.model.lm_head.weight.data_ptr() == bd.model.model.embed_tokens.weight.data_ptr()
    _same_weights(bd.model, ref)


def test_import_lists_unmapped_and_missing_weights(tmp_path) -> None:
    write_sdar_checkpoint(tmp_path / "s", extra={"model.layers.0.self_attn.rotary.inv_freq_x": torch.zeros(3)},
                          drop=("model.layers.1.mlp.up_proj.weight",))
    with pytest.raises(CheckpointError) as e:
        load_sdar(tmp_path / "s")
    msg = str(e.value)
    assert "unmapped" in msg and "model.layers.0.self_attn.rotary.inv_freq_x" in msg
    assert "missing" in msg and "model.layers.1.mlp.up_proj.weight" in msg


def test_import_block_size_and_mask_conflicts_are_errors(tmp_path) -> None:
    write_sdar_checkpoint(tmp_path / "s", block_size=4)
    with pytest.raises(CheckpointError, match="block_size=4 but block_size=8"):
        load_sdar(tmp_path / "s", block_size=8)
    write_sdar_checkpoint(tmp_path / "nob", block_size=None)
    with pytest.raises(CheckpointError, match="states no block size"):
        load_sdar(tmp_path / "nob")
    assert load_sdar(tmp_path / "nob", block_size=8)[0].spec.block_size == 8
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    cfg["mask_token_id"] = 90
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mask_token_id=90"):
        load_sdar(tmp_path / "s")


def test_load_sdar_refuses_other_layouts_and_unknown_types(tmp_path) -> None:
    write_echo_checkpoint(tmp_path / "echo")
    with pytest.raises(CheckpointError, match="not an SDAR checkpoint"):
        load_sdar(tmp_path / "echo", block_size=8)
    write_sdar_checkpoint(tmp_path / "x")
    cfg = json.loads((tmp_path / "x" / "config.json").read_text())
    cfg["model_type"] = "my_remote_arch"
    (tmp_path / "x" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="cannot be loaded without the checkpoint's own code"):
        load_released(tmp_path / "x", block_size=4)


@pytest.mark.parametrize("where", ["tokenizer", "config"])
def test_echo_layout_loads_with_stated_block_size(tmp_path, where) -> None:
    """ECHO: stock Qwen2.5-VL weights under transformers 4.5x names, remote code named in the config,
    the mask in the tokenizer or the config, no shift, block size stated by the user."""
    ref, _ = write_echo_checkpoint(tmp_path / "e", mask_in_tokenizer=where == "tokenizer",
                                   mask_in_config=where == "config")
    with pytest.raises(CheckpointError, match="pass block_size="):
        load_released(tmp_path / "e")
    bd, tok = load_released(tmp_path / "e", block_size=8)
    assert type(bd.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert (bd.spec.block_size, bd.spec.mask_token_id, bd.spec.shift) == (8, 96, False)
    _same_weights(bd.model, ref)
    ids = torch.randint(0, 80, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(bd.model(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_echo_layout_without_any_mask_token_is_an_error(tmp_path) -> None:
    write_echo_checkpoint(tmp_path / "e", mask_in_tokenizer=False, mask_in_config=False)
    with pytest.raises(CheckpointError, match="no mask token"):
        load_released(tmp_path / "e", block_size=8)


# ---------------------------------------------------------------------- export
def _trained_here(shift: bool = False) -> tuple[BlockDiffusionLM, object]:
    from blockdistill.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    return BlockDiffusionLM.from_causal_lm(tiny_qwen3(vocab_size=96, seed=3), tok, block_size=4, shift=shift), tok


def test_export_writes_sdar_layout_and_round_trips_exactly(tmp_path) -> None:
    bd, tok = _trained_here()
    assert tok.convert_ids_to_tokens(bd.spec.mask_token_id) == "[MASK]"
    out = export_sdar(bd, tok, tmp_path / "sdar")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "sdar" and cfg["architectures"] == ["SDARForCausalLM"]
    assert cfg["block_size"] == 4 and cfg["mask_token_id"] == bd.spec.mask_token_id
    assert "blockdistill" not in cfg and "auto_map" not in cfg and cfg["rope_theta"] == 10000.0
    assert set(load_file(str(out / "model.safetensors"))) == set(bd.model.state_dict())
    from blockdistill.models.backbones import load_tokenizer

    saved = load_tokenizer(out)
    assert saved.convert_tokens_to_ids(MASK) == bd.spec.mask_token_id and saved.mask_token == MASK
    assert "[MASK]" not in saved.get_vocab()

    back, tok2 = load_sdar(out)
    assert back.spec == bd.spec
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 80, (2, 13), generator=g)
    seq_lens = torch.tensor([13, 10])
    masked = torch.rand(2, 13, generator=g) < 0.5
    targets = torch.tensor([[6, 7, 8, 9], [5, 6, 7, 8]])
    prompt_lens = torch.tensor([5, 4])
    with torch.no_grad():
        assert torch.equal(back.diffusion_logits(ids, prompt_lens, seq_lens, masked, targets),
                           bd.diffusion_logits(ids, prompt_lens, seq_lens, masked, targets))
        assert torch.equal(back.clean_logits(ids, seq_lens), bd.clean_logits(ids, seq_lens))
    prompts, plens = ids[:, :7], torch.tensor([7, 5])
    for policy in (ConfidenceThreshold(0.5), OneStep()):
        a = block_generate(HFDenoiser(bd), prompts, plens, policy=policy, max_new_tokens=16, stop_at_eos=False)
        b = block_generate(HFDenoiser(back), prompts, plens, policy=policy, max_new_tokens=16, stop_at_eos=False)
        assert all(torch.equal(x, y) for x, y in zip(a.sequences, b.sequences))
        assert len(set(torch.cat(a.sequences).tolist())) > 4  # a diverse decode, not one repeated token


def test_export_refuses_shift_and_non_qwen3(tmp_path) -> None:
    bd, tok = _trained_here(shift=True)
    with pytest.raises(CheckpointError, match="shift=True.*Retrain the RAD stage with block.shift=false"):
        export_sdar(bd, tok, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    from blockdistill.testing import tiny_qwen2, tiny_tokenizer

    tok = tiny_tokenizer()
    q2 = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tok, block_size=4)
    with pytest.raises(CheckpointError, match="model_type='qwen2'"):
        export_sdar(q2, tok, tmp_path / "y")


def test_export_copies_remote_code_only_when_asked(tmp_path) -> None:
    write_sdar_checkpoint(tmp_path / "released")
    bd, tok = _trained_here()
    out = export_sdar(bd, tok, tmp_path / "sdar", remote_code_from=tmp_path / "released")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_sdar.SDARForCausalLM"
    assert (out / "modeling_sdar.py").is_file()
    load_sdar(out)  # still loads without executing the (trap) code
