"""Processor: samples run through a tiny Qwen2.5-VL; image-pad counts and M-RoPE match the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from examples.echo_cxr.data.dataset import (
    CXRRecordDataset,
    SyntheticCXRDataset,
    read_records,
    write_synthetic_dataset,
)
from examples.echo_cxr.data.processor import (
    CXRProcessor,
    VisionSettings,
    format_report,
    mm_token_type_ids,
    mrope_position_ids,
)
from examples.echo_cxr.data.synthetic import generate_sample
from examples.echo_cxr.data.tokenizer import load_qwen_tokenizer, special_token_ids, tiny_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"), n_reports=400)


@pytest.fixture(scope="module")
def proc(tok):
    return CXRProcessor(tok, VisionSettings.tiny(64, patch_size=8), max_images=2)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    ids = special_token_ids(tok)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                         **ids.text_config_kwargs()),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=8, temporal_patch_size=2,
                           spatial_merge_size=2, out_hidden_size=64, window_size=32, fullatt_block_indexes=[1]),
        **ids.config_kwargs(),
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def _batch(samples, eos_id, pad_id, left_pad=False):
    """Minimal stand-in for the library's collator: prompt + response + EOS, padded."""
    seqs = [torch.cat([s["prompt_ids"], s["response_ids"], torch.tensor([eos_id])]) for s in samples]
    T = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), T), pad_id)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, x in enumerate(seqs):
        sl = slice(T - len(x), T) if left_pad else slice(0, len(x))
        ids[i, sl], mask[i, sl] = x, 1
    return ids, mask


@pytest.mark.parametrize("language", ["en", "zh"])
def test_sample_contract_and_tiny_model_loss(proc, model, tok, language):
    """The contract dict feeds a Qwen2.5-VL forward and gives a finite loss; 64x64, patch 8 -> 16 image pads."""
    s = generate_sample(3)
    x = proc.from_synthetic(s, language)
    assert x["pixel_values"].shape == (64, 3 * 2 * 8 * 8) and x["pixel_values"].dtype == torch.float32
    assert x["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert int((x["prompt_ids"] == proc.ids.image_token_id).sum()) == 16
    assert torch.equal(x["mm_token_type_ids"], (x["prompt_ids"] == proc.ids.image_token_id).int())
    assert x["response_ids"].dtype == torch.long and proc.ids.eos_token_id not in x["response_ids"].tolist()
    assert tok.decode(x["response_ids"]) == format_report(s.findings[language], s.impression[language], language)
    assert x["finding_labels"] == s.labels and x["language"] == language and x["study_id"] == s.study_id
    ids, mask = _batch([x], proc.ids.eos_token_id, proc.ids.pad_token_id)
    labels = ids.clone()
    labels[:, : len(x["prompt_ids"])] = -100
    out = model(input_ids=ids, attention_mask=mask, pixel_values=x["pixel_values"], image_grid_thw=x["image_grid_thw"],
                mm_token_type_ids=mm_token_type_ids(ids, proc.ids.image_token_id), labels=labels)
    loss = out.loss.detach()
    assert torch.isfinite(loss) and 4.0 < float(loss) < 12.0  # ~ln(vocab) for a random model


def test_prompt_text(proc, tok):
    x = proc.from_synthetic(generate_sample(1), "zh")
    text = tok.decode(x["prompt_ids"])
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                    + "<|image_pad|>" * 16 + "<|vision_end|>请生成这张胸部X光片报告的所见和印象。<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("left_pad", [False, True])
def test_mrope_matches_model(proc, model, left_pad):
    """Standalone M-RoPE == model.model.get_rope_index on a padded batch with 1 and 2 images of different
    shapes, and explicit position_ids give the same logits as letting the model compute them."""
    a = proc(generate_sample(1).image, "Heart normal.", "Normal.", "en")
    wide = np.concatenate([generate_sample(2).image, generate_sample(2).image[:, :32]], axis=1)  # 64x96
    b = proc([generate_sample(2).image, wide], "Lungs clear.", "No acute process.", "zh")
    # max_pixels = 64*64 shrinks the 64x96 image to 48x64 -> a non-square 6x8 patch grid
    assert b["image_grid_thw"].tolist() == [[1, 8, 8], [1, 6, 8]]
    assert int((b["prompt_ids"] == proc.ids.image_token_id).sum()) == 16 + 12
    ids, mask = _batch([a, b], proc.ids.eos_token_id, proc.ids.pad_token_id, left_pad)
    grid = torch.cat([a["image_grid_thw"], b["image_grid_thw"]])
    types = mm_token_type_ids(ids, proc.ids.image_token_id)
    ref_pos, ref_delta = model.model.get_rope_index(ids, types, image_grid_thw=grid, attention_mask=mask)
    pos, delta = mrope_position_ids(ids, types, grid, 2, mask)
    assert torch.equal(pos, ref_pos) and torch.equal(delta, ref_delta.reshape(delta.shape))
    assert torch.equal(proc.position_ids(ids, grid, attention_mask=mask)[0], ref_pos)
    assert torch.equal(proc.position_ids(ids, grid, model=model, attention_mask=mask)[0], ref_pos)
    # the per-sample prompt positions agree with the batch ones
    P = len(a["prompt_ids"])
    start = ids.shape[1] - int(mask[0].sum()) if left_pad else 0
    assert torch.equal(ref_pos[:, 0, start : start + P], a["position_ids"])
    R = len(a["response_ids"])
    assert ref_pos[0, 0, start + P + R - 1] == P + a["rope_delta"] + R - 1
    kw = dict(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([a["pixel_values"], b["pixel_values"]]),
              image_grid_thw=grid, mm_token_type_ids=types)
    with torch.no_grad():
        model.model.rope_deltas = None
        implicit = model(**kw).logits
        model.model.rope_deltas = None
        explicit = model(**kw, position_ids=pos).logits
    keep = mask.bool()
    assert torch.allclose(implicit[keep], explicit[keep], atol=1e-5)


def test_qwen_tokenizer_offline_and_lingshu_settings():
    """The real Qwen tokenizer works offline; Lingshu's 14/2/2 patching gives 64 pads for a 224x224 image."""
    q = load_qwen_tokenizer()
    p = CXRProcessor(q, VisionSettings())
    img = np.asarray(generate_sample(0).to_pil().resize((224, 224)))
    x = p(img, "The heart is enlarged.", "Cardiomegaly.", "en")
    assert x["image_grid_thw"].tolist() == [[1, 16, 16]] and x["pixel_values"].shape == (256, 3 * 2 * 14 * 14)
    assert int((x["prompt_ids"] == 151655).sum()) == 64
    full = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
            + "<|image_pad|>" * 64 + "<|vision_end|>Generate the findings and impression of this chest X-ray report."
            "<|im_end|>\n<|im_start|>assistant\n")
    assert x["prompt_ids"].tolist() == q(full).input_ids
    assert q.decode(x["response_ids"]) == "Findings: The heart is enlarged.\nImpression: Cardiomegaly."


def test_settings_and_errors(proc, tok):
    vc = Qwen2_5_VLConfig().vision_config
    assert VisionSettings.from_vision_config(vc) == VisionSettings()
    assert VisionSettings.from_vision_config(vc, patch_size=8).patch_size == 8
    with pytest.raises(ValueError, match="multiple"):
        VisionSettings.tiny(60, patch_size=8)
    with pytest.raises(ValueError, match="language"):
        proc(generate_sample(0).image, "a", "b", "fr")
    with pytest.raises(ValueError, match="neither findings nor impression"):
        format_report("", " ", "en")
    assert format_report("", "Normal.", "zh") == "印象：Normal."
    with pytest.raises(ValueError, match="grid"):
        ids = torch.tensor([5, 6, 6, 6, 5])
        mrope_position_ids(ids, mm_token_type_ids(ids, 6), torch.tensor([[1, 4, 4]]), 2)


def test_datasets_disk_equals_memory(tmp_path, proc):
    """Records written to disk and read back give the same tensors as the in-memory synthetic path."""
    jsonl = write_synthetic_dataset(tmp_path, n=3, seed=5)
    disk = CXRRecordDataset(read_records(jsonl), proc)
    mem = SyntheticCXRDataset(3, proc, seed=5, languages=("en", "zh"))
    assert len(disk) == len(mem) == 6
    for i in range(6):
        d, m = disk[i], mem[i]
        assert d["language"] == m["language"] == ("en", "zh")[i % 2]
        for k in ("prompt_ids", "response_ids", "pixel_values", "image_grid_thw", "position_ids"):
            assert torch.equal(d[k], m[k]), k
        assert d["finding_labels"] == m["finding_labels"]
    assert torch.equal(mem[4]["pixel_values"], mem[4]["pixel_values"])
    with pytest.raises(IndexError):
        mem[6]
