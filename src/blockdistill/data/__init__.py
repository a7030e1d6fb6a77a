"""Training examples and batches: prompt and response ids (plus vision inputs) become padded
clean streams on the block grid (DESIGN.md §2)."""

from blockdistill.data.collate import Batch, BlockCollator
from blockdistill.data.vision import collate_vision

__all__ = ["Batch", "BlockCollator", "collate_vision"]
