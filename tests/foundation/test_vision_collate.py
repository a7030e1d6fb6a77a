"""One vision-collate helper for every batch type (training examples, prompts, trajectory records).

Guards against: the batch types drifting apart on how images are concatenated and assigned to
rows, a row's images landing in another row, and a grid that does not match its pixel values
passing unnoticed (in any of the three batch types) or being reported without the record's name.
"""

from __future__ import annotations

import pytest
import torch

from blockdistill.data import BlockCollator, collate_vision
from blockdistill.distill import TokenDists, TrajectoryRecord, collate_records
from blockdistill.distill.prompts import collate_prompts

D = 6


def _images(grids: list[list[int]], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.tensor(grids)
    return torch.randn(int(g.prod(-1).sum()), D, generator=torch.Generator().manual_seed(seed)), g


ROWS = [_images([[1, 2, 2], [1, 2, 4]], 0), (None, None), _images([[1, 4, 2]], 1), (None, None)]


def _expected():
    """By hand: row 0's two images, then row 2's one."""
    pix = torch.cat([ROWS[0][0], ROWS[2][0]])
    thw = torch.tensor([[1, 2, 2], [1, 2, 4], [1, 4, 2]])
    return pix, thw, [0, 0, 2]


def _record(i: int, pv, thw) -> TrajectoryRecord:
    tokens = torch.tensor([1, 9, 9, 9])
    return TrajectoryRecord(example_id=f"r{i}", prompt_ids=torch.tensor([5, 6, 7, 8]), tokens=tokens,
                            commit_step=torch.ones(4, dtype=torch.long), block_steps=torch.ones(4, dtype=torch.long),
                            target=TokenDists.one_hot(tokens, 12), block_size=4, eos_token_id=9, response_len=1,
                            pixel_values=pv, image_grid_thw=thw)


def _three_batches(rows):
    examples = [{"id": f"r{i}", "prompt_ids": [5, 6, 7, 8], "response_ids": [1], "pixel_values": pv,
                 "image_grid_thw": thw} for i, (pv, thw) in enumerate(rows)]
    train = BlockCollator(block_size=4, eos_token_id=9)(examples)
    prompts = collate_prompts(examples, pad_token_id=0)
    records = collate_records([_record(i, pv, thw) for i, (pv, thw) in enumerate(rows)])
    return {"train": train, "prompts": prompts, "records": records}


def test_every_batch_type_collates_images_the_same_way() -> None:
    pix, thw, rows = _expected()
    vision, image_rows = collate_vision(ROWS)
    assert torch.equal(vision.pixel_values, pix) and torch.equal(vision.image_grid_thw, thw)
    assert image_rows.tolist() == rows and image_rows.dtype == torch.long
    for name, batch in _three_batches(ROWS).items():
        assert torch.equal(batch.vision.pixel_values, pix), name
        assert torch.equal(batch.vision.image_grid_thw, thw), name
        assert batch.image_rows.tolist() == rows, name
        # Each row gets back exactly its own images.
        for b, (pv, g) in enumerate(ROWS):
            if pv is None:
                assert not bool((batch.image_rows == b).any())
            else:
                mine = batch.vision.select([b], batch.image_rows)
                assert torch.equal(mine.pixel_values, pv) and torch.equal(mine.image_grid_thw, g), (name, b)


def test_text_only_batches_have_no_vision() -> None:
    assert collate_vision([(None, None)] * 3) == (None, None)
    for name, batch in _three_batches([(None, None)] * 2).items():
        assert batch.vision is None and batch.image_rows is None, name


def test_a_grid_that_does_not_match_its_pixels_is_named_in_every_batch_type() -> None:
    pv, _ = _images([[1, 2, 2]], 2)
    bad = [ROWS[0], (pv, torch.tensor([[1, 2, 4]]))]  # row 1: 4 patches, grid says 8
    with pytest.raises(ValueError, match=r"example 1: image_grid_thw \[\[1, 2, 4\]\] implies 8 patches but "
                                         r"pixel_values has 4"):
        collate_vision(bad)
    with pytest.raises(ValueError, match="example 'r1'.*implies 8 patches"):
        collate_vision(bad, ["r0", "r1"])
    examples = [{"id": f"r{i}", "prompt_ids": [5], "response_ids": [1], "pixel_values": p, "image_grid_thw": g}
                for i, (p, g) in enumerate(bad)]
    with pytest.raises(ValueError, match="example 1: .*implies 8 patches"):
        BlockCollator(block_size=4, eos_token_id=9)(examples)
    with pytest.raises(ValueError, match="example 'r1': .*implies 8 patches"):
        collate_prompts(examples, pad_token_id=0)
    with pytest.raises(ValueError, match="example 'r0': has pixel_values but no image_grid_thw"):
        collate_vision([(pv, None)], ["r0"])
