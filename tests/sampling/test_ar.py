"""The AR baseline equals the backbone's own greedy ``generate``, and block decoding with
``L = 1, shift=True`` is exactly AR decoding."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockdistill.sampling import ConfidenceThreshold, OneStep, ar_generate, block_generate
from tests.sampling.helpers import (
    as_lists,
    denoiser,
    image_prompt,
    images,
    pad_rows,
    random_prompts,
    text_bd,
    vl_bd,
)


def _hf_generate(bd, ids, n, **extra):
    out = bd.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                            min_new_tokens=n, do_sample=False, suppress_tokens=[bd.spec.mask_token_id],
                            pad_token_id=bd.spec.pad_token_id, **extra)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("plen", [1, 6, 13])
def test_ar_equals_hf_generate_text(plen):
    """Guards: wrong positions or mask in the cached one-token step, an LM head on the wrong slot."""
    bd = text_bd()
    ids, lens = random_prompts([plen], plen)
    ours = as_lists(ar_generate(bd, ids, lens, max_new_tokens=12, stop_at_eos=False))[0]
    assert ours == _hf_generate(bd, ids, 12)
    assert len(set(ours)) >= 3


def test_ar_equals_hf_generate_with_an_image():
    """M-RoPE: prompt positions from get_rope_index, generated tokens at index + delta."""
    bd = vl_bd()
    ids = torch.tensor([image_prompt(bd, 3, 4)])
    vis = images(bd, 1)
    ours = as_lists(ar_generate(bd, ids, torch.tensor([ids.shape[1]]), vis, max_new_tokens=10,
                                stop_at_eos=False))[0]
    mm = (ids == bd.model.config.image_token_id).int()
    theirs = _hf_generate(bd, ids, 10, pixel_values=vis.pixel_values, image_grid_thw=vis.image_grid_thw,
                          mm_token_type_ids=mm)
    assert ours == theirs
    assert len(set(ours)) >= 4


@settings(max_examples=8)
@given(lens=st.lists(st.integers(1, 12), min_size=1, max_size=3), cache=st.sampled_from(["none", "block", "fused"]),
       one_step=st.booleans(), seed=st.integers(0, 999))
def test_block_size_one_with_shift_is_ar(lens, cache, one_step, seed):
    """With L = 1 and shift, each block is one token predicted by the previous clean token:
    block decoding must be the AR baseline token for token, in every cache mode."""
    ids, plen = random_prompts(lens, seed)
    policy = OneStep() if one_step else ConfidenceThreshold()
    blk = block_generate(denoiser(text_bd(), 1, True), ids, plen, policy=policy, cache=cache,
                         max_new_tokens=10, stop_at_eos=False)
    ar = ar_generate(text_bd(), ids, plen, max_new_tokens=10, stop_at_eos=False)
    assert as_lists(blk) == as_lists(ar)


def test_block_size_one_with_shift_is_ar_with_an_image():
    bd = vl_bd()
    rows = [image_prompt(bd, 2, 3, seed=1), image_prompt(bd, 4, 1, seed=2)]
    ids, plen = pad_rows(rows, bd.spec.pad_token_id)
    vis = images(bd, 2)
    ar = ar_generate(bd, ids, plen, vis, max_new_tokens=8, stop_at_eos=False)
    for cache in ("block", "fused"):
        blk = block_generate(denoiser(bd, 1, True), ids, plen, vis, cache=cache, max_new_tokens=8,
                             stop_at_eos=False)
        assert as_lists(blk) == as_lists(ar)
