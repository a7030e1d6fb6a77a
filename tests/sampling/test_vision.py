"""Vision-language decoding (tiny Qwen2.5-VL): the image is prefilled once, M-RoPE positions
come from the prompt, and every equivalence of the text tests holds."""

import pytest
import torch

from blockdistill import VisionInputs
from blockdistill.sampling import ConfidenceThreshold, OneStep, block_generate
from tests.sampling.helpers import (
    as_lists,
    denoiser,
    image_prompt,
    images,
    pad_rows,
    reference_block_decode,
    variant,
    vl_bd,
)


def _row_vision(vis: VisionInputs, b: int) -> VisionInputs:
    per = int(vis.image_grid_thw[0].prod())
    return VisionInputs(vis.pixel_values[b * per:(b + 1) * per], vis.image_grid_thw[b: b + 1])


# (text before the image, text after it): the last case puts image-pad tokens in the prompt
# tail, i.e. inside the first response block, where they are sent as noisy-block tokens.
PROMPTS = [(3, 4), (2, 1), (4, 0)]


@pytest.mark.parametrize("L,shift", [(4, False), (8, True), (2, True)])
@pytest.mark.parametrize("before,after", PROMPTS)
def test_vision_caches_agree_with_brute_force(L, shift, before, after):
    bd = vl_bd()
    prompt = image_prompt(bd, before, after)
    ids, plen = torch.tensor([prompt]), torch.tensor([len(prompt)])
    vis = images(bd, 1)
    for tau, policy in ((None, OneStep()), (0.6, ConfidenceThreshold(0.6))):
        ref = reference_block_decode(variant(bd, L, shift), prompt, 9, tau, vision=vis)
        for cache in ("none", "block", "fused"):
            out = block_generate(denoiser(bd, L, shift), ids, plen, vis, policy=policy, cache=cache,
                                 max_new_tokens=9, stop_at_eos=False)
            assert as_lists(out)[0] == ref, (cache, tau)
        assert len(set(ref)) >= 3


@pytest.mark.parametrize("cache", ["none", "block", "fused"])
def test_vision_batched_equals_alone(cache):
    """Two rows, one image each, different prompt lengths (different M-RoPE deltas)."""
    bd = vl_bd()
    rows = [image_prompt(bd, 3, 4, seed=1), image_prompt(bd, 1, 9, seed=2)]
    ids, plen = pad_rows(rows, bd.spec.pad_token_id)
    vis = images(bd, 2, seed=3)
    kw = dict(policy=ConfidenceThreshold(), cache=cache, max_new_tokens=10, stop_at_eos=False)
    den = denoiser(bd, 4, True)
    batched = as_lists(block_generate(den, ids, plen, vis, **kw))
    alone = [as_lists(block_generate(den, ids[b: b + 1, : len(r)], plen[b: b + 1], _row_vision(vis, b), **kw))[0]
             for b, r in enumerate(rows)]
    assert batched == alone
    assert batched[0] != batched[1]


def test_image_changes_the_output():
    """The vision features reach the decoder (otherwise the tests above prove little)."""
    bd = vl_bd()
    prompt = image_prompt(bd, 3, 4)
    ids, plen = torch.tensor([prompt]), torch.tensor([len(prompt)])
    den = denoiser(bd, 4, False)
    a = as_lists(block_generate(den, ids, plen, images(bd, 1, seed=0), max_new_tokens=8, stop_at_eos=False))
    b = as_lists(block_generate(den, ids, plen, images(bd, 1, seed=5), max_new_tokens=8, stop_at_eos=False))
    assert a != b


def test_vision_tau_zero_is_one_step_and_fused_costs_one_forward_per_block():
    bd = vl_bd()
    prompt = image_prompt(bd, 2, 2)  # 10 tokens: s = 8, two prompt tokens in the first block
    ids, plen = torch.tensor([prompt]), torch.tensor([len(prompt)])
    vis = images(bd, 1)
    den = denoiser(bd, 4, True)
    kw = dict(cache="fused", max_new_tokens=10, stop_at_eos=False)
    one = block_generate(den, ids, plen, vis, policy=OneStep(), **kw)
    zero = block_generate(den, ids, plen, vis, policy=ConfidenceThreshold(0.0), **kw)
    assert as_lists(one) == as_lists(zero)
    assert (one.stats.nfe, one.stats.nfe_decode) == (4, 3)  # prefill + blocks [8,12), [12,16), [16,20)
