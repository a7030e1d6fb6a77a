"""Bad inputs fail early with messages that name the bad value."""

import pytest
import torch

from blockdistill.sampling import ar_generate, block_generate
from tests.sampling.helpers import denoiser, image_prompt, images, random_prompts, text_bd, vl_bd


def test_prompt_longer_than_the_context():
    ids, plen = random_prompts([600], 0)  # tiny_qwen2: max_position_embeddings=512
    with pytest.raises(ValueError, match="prompt has 600 tokens but the backbone's context is 512"):
        block_generate(denoiser(text_bd(), 4, False), ids, plen, max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt has 600 tokens but the backbone's context is 512"):
        ar_generate(text_bd(), ids, plen, max_new_tokens=4)


def test_prompt_plus_new_tokens_past_the_context():
    ids, plen = random_prompts([505], 0)
    with pytest.raises(ValueError, match="max_new_tokens=10 needs 516 positions"):
        block_generate(denoiser(text_bd(), 4, False), ids, plen, max_new_tokens=10)


@pytest.mark.parametrize("n", [0, -3])
def test_max_new_tokens_below_one(n):
    ids, plen = random_prompts([5], 0)
    with pytest.raises(ValueError, match=f"max_new_tokens must be >= 1, got {n}"):
        block_generate(denoiser(text_bd(), 4, False), ids, plen, max_new_tokens=n)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        ar_generate(text_bd(), ids, plen, max_new_tokens=n)


def test_bad_prompt_lengths_and_cache_mode():
    ids, _ = random_prompts([5, 4], 0)
    den = denoiser(text_bd(), 4, False)
    with pytest.raises(ValueError, match="prompt_lens must be in"):
        block_generate(den, ids, torch.tensor([0, 4]), max_new_tokens=3)
    with pytest.raises(ValueError, match="prompt_lens must be in"):
        block_generate(den, ids, torch.tensor([6, 4]), max_new_tokens=3)
    with pytest.raises(ValueError, match="prompt_lens"):
        block_generate(den, ids, torch.tensor([5]), max_new_tokens=3)
    with pytest.raises(ValueError, match="cache must be one of"):
        block_generate(den, ids, torch.tensor([5, 4]), cache="paged", max_new_tokens=3)


def test_vision_inputs_that_do_not_match_the_prompt():
    bd = vl_bd()
    ids = torch.tensor([image_prompt(bd, 2, 2)])
    plen = torch.tensor([ids.shape[1]])
    with pytest.raises(ValueError, match="image_grid_thw gives 8 image tokens but the input ids hold 4"):
        block_generate(denoiser(bd, 4, False), ids, plen, images(bd, 2), max_new_tokens=3)
    with pytest.raises(ValueError, match="image-pad tokens but no vision inputs"):
        block_generate(denoiser(bd, 4, False), ids, plen, None, max_new_tokens=3)
    with pytest.raises(ValueError, match="image_grid_thw gives 8 image tokens"):
        ar_generate(bd, ids, plen, images(bd, 2), max_new_tokens=3)


def test_vision_inputs_for_a_text_backbone():
    ids, plen = random_prompts([5], 0)
    with pytest.raises(ValueError, match="takes no vision inputs"):
        block_generate(denoiser(text_bd(), 4, False), ids, plen, images(vl_bd(), 1), max_new_tokens=3)
