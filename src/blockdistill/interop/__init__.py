"""Interoperability with the block-diffusion ecosystem.

- :func:`load_released`: checkpoints saved the way SDAR and ECHO save theirs (a stock weight
  layout, a config naming remote code that is never executed, ``<|MASK|>``, no shift);
- :func:`load_sdar` / :func:`export_sdar`: SDAR's layout in and out (what SGLang and LMDeploy
  serve); :class:`SDARThreshold` / :class:`SDARConfidence`: SDAR's decoding rules where they
  differ from blockdistill's (docs/serving.md).
"""

from blockdistill.interop.checkpoints import (
    MASK_TOKEN,
    CheckpointError,
    ReleasedCheckpoint,
    load_released,
    read_checkpoint_config,
)
from blockdistill.interop.sdar import (
    SDARConfidence,
    SDARThreshold,
    export_sdar,
    load_sdar,
    sdar_transfer_counts,
)

__all__ = [
    "MASK_TOKEN", "CheckpointError", "ReleasedCheckpoint", "SDARConfidence", "SDARThreshold", "export_sdar",
    "load_released", "load_sdar", "read_checkpoint_config", "sdar_transfer_counts",
]
