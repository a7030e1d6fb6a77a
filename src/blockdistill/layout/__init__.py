"""The one definition of the block grid and the attention rules (DESIGN.md §2).

- :mod:`blockdistill.layout.grid`: block ids, spans and lengths on the grid aligned to index 0;
- :mod:`blockdistill.layout.masks`: slots, the attention rule :func:`attends` and its dense,
  additive and flex_attention views.
"""

from blockdistill.layout.grid import block_id, clean_length, padding_mask, response_block_start
from blockdistill.layout.masks import (
    SlotLayout,
    additive_mask,
    attends,
    clean_layout,
    dense_mask,
    flex_block_mask,
    full_dup_layout,
    mask_mod,
    rad_layout,
)

__all__ = [
    "SlotLayout", "additive_mask", "attends", "block_id", "clean_layout", "clean_length", "dense_mask",
    "flex_block_mask", "full_dup_layout", "mask_mod", "padding_mask", "rad_layout", "response_block_start",
]
