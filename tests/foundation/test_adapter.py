"""The adapter: RAD equals full duplication, the wrapper leaves the backbone unchanged, and the
block rules round-trip through save_pretrained/from_pretrained."""

import pytest
import torch

from blockdistill import BlockDiffusionLM, VisionInputs
from blockdistill.layout import padding_mask
from blockdistill.recipes import wrap_for_stage
from blockdistill.testing import tiny_image_inputs, tiny_qwen2, tiny_qwen2_5_vl, tiny_tokenizer
from tests.foundation.helpers import all_response_targets, collate, random_examples, random_mask


@pytest.fixture(scope="module")
def text_bd():
    return BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4)


@pytest.fixture(scope="module")
def vl_setup():
    model = tiny_qwen2_5_vl()
    bd = BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(), block_size=4)
    pv, thw, k = tiny_image_inputs(model, num_images=3)
    c = model.config
    prefix = [3, c.vision_start_token_id] + [c.image_token_id] * k + [c.vision_end_token_id]
    return bd, VisionInputs(pv, thw), prefix


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size", [1, 3, 4])
def test_rad_logits_equal_full_duplication_text(text_bd, size, shift):
    bd = BlockDiffusionLM(text_bd.model, text_bd.spec.__class__(size, text_bd.spec.mask_token_id,
                          text_bd.spec.eos_token_id, text_bd.spec.pad_token_id, shift))
    batch = collate(bd, random_examples([5, 9, 2], [7, 1, 10], seed=size))
    masked, targets = random_mask(batch, seed=1), all_response_targets(batch)
    with torch.no_grad():
        rad = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
        dup = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets,
                                  layout="full_dup")
    assert rad.std() > 0.1  # not a degenerate model
    torch.testing.assert_close(rad, dup, atol=2e-5, rtol=1e-4)


def test_rad_logits_equal_full_duplication_vision(vl_setup):
    bd, vision, prefix = vl_setup
    batch = collate(bd, random_examples([3, 6, 1], [6, 3, 9], seed=3, prefix=prefix))
    masked, targets = random_mask(batch, seed=2), all_response_targets(batch)
    with torch.no_grad():
        rad = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, vision)
        dup = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, vision,
                                  layout="full_dup")
    torch.testing.assert_close(rad, dup, atol=2e-5, rtol=1e-4)


def test_rad_depends_on_the_image(vl_setup):
    """Guards against image features silently not reaching the noisy copy."""
    bd, vision, prefix = vl_setup
    batch = collate(bd, random_examples([3, 3, 3], [6, 6, 6], seed=4, prefix=prefix))
    masked, targets = random_mask(batch, seed=2), all_response_targets(batch)
    other = VisionInputs(vision.pixel_values.flip(0), vision.image_grid_thw)
    with torch.no_grad():
        a = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, vision)
        b = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, other)
    assert (a - b).abs().max() > 1e-3


def test_block_size_one_clean_logits_equal_plain_hf_causal_text(text_bd):
    batch = collate(text_bd, random_examples([4, 8], [5, 2], seed=5))
    valid = padding_mask(batch.seq_lens, batch.input_ids.shape[1])
    with torch.no_grad():
        ours = text_bd.clean_logits(batch.input_ids, batch.seq_lens, block_size=1)
        hf = text_bd.model(input_ids=batch.input_ids, attention_mask=valid.long()).logits
    torch.testing.assert_close(ours[valid], hf[valid], atol=1e-5, rtol=1e-5)


def test_block_size_one_clean_logits_equal_plain_hf_causal_vision(vl_setup):
    bd, vision, prefix = vl_setup
    batch = collate(bd, random_examples([2, 5, 4], [5, 2, 3], seed=6, prefix=prefix))
    valid = padding_mask(batch.seq_lens, batch.input_ids.shape[1])
    mm = (batch.input_ids == bd.model.config.image_token_id).int()
    with torch.no_grad():
        ours = bd.clean_logits(batch.input_ids, batch.seq_lens, vision, block_size=1)
        hf = bd.model(input_ids=batch.input_ids, attention_mask=valid.long(), pixel_values=vision.pixel_values,
                      image_grid_thw=vision.image_grid_thw, mm_token_type_ids=mm).logits
    torch.testing.assert_close(ours[valid], hf[valid], atol=1e-5, rtol=1e-5)


def test_mask_token_added_once_with_mean_embedding():
    tok, model = tiny_tokenizer(), tiny_qwen2()
    before = model.get_input_embeddings().weight.detach().clone()
    bd = BlockDiffusionLM.from_causal_lm(model, tok, block_size=4)
    emb = model.get_input_embeddings().weight
    assert bd.spec.mask_token_id == len(tok) - 1 == before.shape[0]
    assert emb.shape[0] == before.shape[0] + 1
    torch.testing.assert_close(emb[: before.shape[0]], before)
    torch.testing.assert_close(emb[bd.spec.mask_token_id], before.mean(0))
    # wrapping again (e.g. the next stage) reuses the stored token instead of adding another
    again = wrap_for_stage(model, tok, block_size=8, allow_block_size_change=True)
    assert again.spec.mask_token_id == bd.spec.mask_token_id and again.block_size == 8
    assert model.get_input_embeddings().weight.shape[0] == before.shape[0] + 1


def test_wrapping_a_trained_block_model_keeps_its_rules_or_names_the_field():
    """A stored block model decodes with the rules it was trained with: another block size only
    where the stage retrains it, never another shift."""
    from blockdistill.config import ConfigError

    tok, model = tiny_tokenizer(), tiny_qwen2()
    bd = BlockDiffusionLM.from_causal_lm(model, tok, block_size=4, shift=True)
    same = wrap_for_stage(model, tok, block_size=4, shift=True)
    assert same.spec == bd.spec
    with pytest.raises(ConfigError, match=r"block\.block_size.*block_size=4"):
        wrap_for_stage(model, tok, block_size=8, shift=True)
    with pytest.raises(ConfigError, match=r"block\.shift.*shift=true"):
        wrap_for_stage(model, tok, block_size=4, shift=False)
    with pytest.raises(ConfigError, match=r"block\.shift"):
        wrap_for_stage(model, tok, block_size=8, shift=False, allow_block_size_change=True)
    retrained = wrap_for_stage(model, tok, block_size=8, shift=True, allow_block_size_change=True)
    assert retrained.block_size == 8 and retrained.spec.shift and retrained.spec.mask_token_id == bd.spec.mask_token_id


def test_save_and_load_round_trip_keeps_block_rules_and_logits(tmp_path, text_bd):
    text_bd.save_pretrained(tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text()
    assert '"blockdistill"' in cfg and '"mask_token_id": 96' in cfg
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = BlockDiffusionLM.from_pretrained(tmp_path / "m")
    assert loaded.spec == text_bd.spec
    batch = collate(text_bd, random_examples([4, 6], [5, 3], seed=7))
    masked, targets = random_mask(batch), all_response_targets(batch)
    with torch.no_grad():
        a = text_bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
        b = loaded.eval().diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_save_and_load_round_trip_vision(tmp_path, vl_setup):
    bd, _, _ = vl_setup
    bd.save_pretrained(tmp_path / "vl")
    loaded = BlockDiffusionLM.from_pretrained(tmp_path / "vl")
    assert loaded.spec == bd.spec and loaded.family.name == "qwen2_5_vl"


def test_mask_id_colliding_with_a_real_token_is_rejected():
    model, tok = tiny_qwen2(), tiny_tokenizer()
    with pytest.raises(ValueError, match="collides with a real token"):
        wrap_for_stage(model, tok, block_size=4, mask_token_id=5)
    with pytest.raises(ValueError, match="already exists as a real token"):
        BlockDiffusionLM.from_causal_lm(model, tok, block_size=4, mask_token="t7")


def test_prompt_plus_response_longer_than_context_is_rejected(text_bd):
    with pytest.raises(ValueError, match="but the backbone's context is 512"):
        text_bd.check_length(600)


def test_vision_inputs_that_do_not_match_the_prompt_are_rejected(vl_setup):
    bd, vision, prefix = vl_setup
    batch = collate(bd, random_examples([3], [4], prefix=prefix))
    # one row holds one image's pad tokens, but three images are given
    with pytest.raises(ValueError, match="image_grid_thw gives 12 image tokens but the input ids hold 4"):
        bd.clean_logits(batch.input_ids, batch.seq_lens, vision)


def test_flex_attention_inference_matches_sdpa(text_bd):
    batch = collate(text_bd, random_examples([5, 3], [6, 9], seed=8))
    masked, targets = random_mask(batch), all_response_targets(batch)
    with torch.no_grad():
        ref = text_bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
        for backend in ("eager", "flex_attention"):
            text_bd.set_attn_backend(backend)
            try:
                out = text_bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets)
            finally:
                text_bd.set_attn_backend("sdpa")
            torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_flex_attention_training_on_cpu_raises_clearly(text_bd):
    batch = collate(text_bd, random_examples([5], [6]))
    text_bd.set_attn_backend("flex_attention")
    text_bd.train()
    try:
        with pytest.raises(RuntimeError, match="no backward pass on CPU"):
            text_bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, random_mask(batch),
                                     all_response_targets(batch))
    finally:
        text_bd.set_attn_backend("sdpa")
        text_bd.eval()


def test_a_tokenizer_that_already_carries_the_mask_token_is_reused():
    """Guards against a second model failing to wrap with the tokenizer saved by an earlier stage."""
    tok = tiny_tokenizer()
    first = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tok, block_size=4)
    n = len(tok)
    second = BlockDiffusionLM.from_causal_lm(tiny_qwen2(seed=1), tok, block_size=8)
    assert len(tok) == n and second.spec.mask_token_id == first.spec.mask_token_id
