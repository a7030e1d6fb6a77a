"""The one definition of the block grid and the attention rules (DESIGN.md §2).

- :mod:`blockdistill.layout.grid`: block ids, spans and lengths on the grid aligned to index 0;
- :mod:`blockdistill.layout.masks`: slots, the attention rule :func:`attends` and its dense,
  additive and flex_attention views.
"""

from blockdistill.layout.grid import (
    block_id,
    block_indices,
    block_span,
    clean_length,
    decode_end,
    generated_through,
    num_blocks,
    on_block_boundary,
    padding_mask,
    readout_column,
    response_block_start,
    tail_len,
)
from blockdistill.layout.masks import (
    TRAINING_LAYOUTS,
    SlotLayout,
    additive_mask,
    attends,
    clean_layout,
    dense_mask,
    flex_block_mask,
    full_dup_layout,
    mask_mod,
    rad_layout,
    training_layout,
)

__all__ = [
    "TRAINING_LAYOUTS", "SlotLayout", "additive_mask", "attends", "block_id", "block_indices", "block_span", "clean_layout",
    "clean_length", "decode_end", "dense_mask", "flex_block_mask", "full_dup_layout", "generated_through",
    "mask_mod", "num_blocks", "on_block_boundary", "padding_mask", "rad_layout", "readout_column",
    "response_block_start", "tail_len", "training_layout",
]
