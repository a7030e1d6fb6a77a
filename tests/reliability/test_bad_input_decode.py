"""Bad decoding-API inputs get a clear error naming the value (issue 19, point 5).

Each input is injected for real into ``generate`` (and ``block_generate``, the samplers' entry)
on a tiny Qwen2.5-VL; before these checks they failed deep inside a forward, or (NaN pixels)
decoded silently to a constant.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src:. .venv/bin/python -m pytest tests/reliability/test_bad_input_decode.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.models.families import VisionInputs
from blockdistill.sampling.block import block_generate
from blockdistill.sampling.generate import generate
from blockdistill.sampling.hf import HFDenoiser
from blockdistill.testing import tiny_image_inputs, tiny_qwen2, tiny_qwen2_5_vl, tiny_tokenizer


@pytest.fixture(scope="module")
def vl():
    model = tiny_qwen2_5_vl()
    bd = BlockDiffusionLM.from_causal_lm(model, tiny_tokenizer(), block_size=4).eval()
    pv, thw, n = tiny_image_inputs(model, num_images=2)
    img = model.config.image_token_id
    ids = torch.tensor([[5, 6] + [img] * n + [7, 8], [9] + [img] * n + [10, 11, 12]])
    return bd, ids, pv, thw, n


def _call(vl, **kw):
    bd, ids, pv, thw, _ = vl
    args = {"input_ids": ids, "pixel_values": pv, "image_grid_thw": thw, "max_new_tokens": 4, **kw}
    return generate(bd, **args)


def test_valid_inputs_decode(vl) -> None:
    """The reference: the checks let a valid batch through unchanged."""
    out = _call(vl)
    assert out.sequences.shape[0] == 2 and all(len(s) >= 1 for s in out.generated)


@pytest.mark.parametrize("value", [4.0, 4.5, "4", True, torch.tensor(4)])
def test_a_non_integer_max_new_tokens(vl, value) -> None:
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int, got"):
        _call(vl, max_new_tokens=value)


def test_a_numpy_integer_max_new_tokens_is_an_int(vl) -> None:
    assert _call(vl, max_new_tokens=np.int64(4)).sequences.shape[0] == 2


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.float32])
def test_ids_that_are_not_long(vl, dtype) -> None:
    with pytest.raises(ValueError, match=rf"input_ids must be torch.long \(int64\) token ids, got {dtype}"):
        _call(vl, input_ids=vl[1].to(dtype))


def test_ids_outside_the_vocabulary(vl) -> None:
    bd, ids, *_ = vl
    bad = ids.clone()
    bad[1, 0] = 10_000
    with pytest.raises(ValueError, match=r"token id 10000 outside the model's vocabulary \[0, 97\)"):
        _call(vl, input_ids=bad)
    masked = torch.cat([torch.full((2, 1), -100), ids], 1)  # a masked-out pad may hold anything
    attention = torch.cat([torch.zeros(2, 1, dtype=torch.long), torch.ones_like(ids)], 1)
    assert _call(vl, input_ids=masked, attention_mask=attention).sequences.shape[0] == 2


def test_pixel_values_that_do_not_match_the_grid(vl) -> None:
    _, _, pv, thw, _ = vl
    with pytest.raises(ValueError, match=r"pixel_values has 31 patch rows but image_grid_thw .* gives 32"):
        _call(vl, pixel_values=pv[:-1])
    with pytest.raises(ValueError, match=r"pixel_values rows have 383 values but this model's patches have 384"):
        _call(vl, pixel_values=pv[:, :-1])
    with pytest.raises(ValueError, match=r"multiples of spatial_merge_size=2"):
        _call(vl, pixel_values=torch.cat([pv, pv[:4]]), image_grid_thw=torch.tensor([[1, 4, 4], [1, 4, 5]]))
    with pytest.raises(ValueError, match=r"image_grid_thw must be an integer \(num_images, 3\)"):
        _call(vl, image_grid_thw=thw.float())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixel_values(vl, bad) -> None:
    _, _, pv, _, _ = vl
    poisoned = pv.clone()
    poisoned[20, 5] = bad  # image 1 (16 patch rows per image)
    with pytest.raises(ValueError, match=r"1 non-finite values \(NaN or inf\), the first in image 1 \(patch row 20\)"):
        _call(vl, pixel_values=poisoned)


def test_a_prompt_len_cutting_through_an_image(vl) -> None:
    bd, ids, pv, thw, n = vl
    vision = VisionInputs(pv, thw)
    lens = torch.tensor([ids.shape[1], 1 + n // 2])  # row 1's prompt ends inside its image
    with pytest.raises(ValueError, match=r"prompt_lens\[1\]=3 cuts through an image: row 1 has image-pad tokens "
                                         r"from position 3 on"):
        block_generate(HFDenoiser(bd), ids, lens, vision, max_new_tokens=4)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with pytest.raises(ValueError, match="attention_mask cuts through an image"):
        _call(vl, attention_mask=mask)


def test_rows_that_split_an_image_between_them(vl) -> None:
    bd, ids, pv, thw, n = vl
    img = ids[0, 2]
    uneven = torch.tensor([[5] + [img] * (n + 1) + [7], [9] + [img] * (n - 1) + [10, 11, 12]])
    with pytest.raises(ValueError, match=r"row 0 holds 5 image-pad tokens, which do not make whole images"):
        _call(vl, input_ids=uneven)


def test_the_text_sampler_checks_ids_and_max_new_tokens_too() -> None:
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4).eval()
    ids, lens = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    with pytest.raises(ValueError, match="prompt_ids must be torch.long"):
        block_generate(HFDenoiser(bd), ids.int(), lens, max_new_tokens=4)
    with pytest.raises(ValueError, match="max_new_tokens must be an int, got float 4.0"):
        block_generate(HFDenoiser(bd), ids, lens, max_new_tokens=4.0)
