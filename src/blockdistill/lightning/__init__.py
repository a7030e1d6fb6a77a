"""Thin Lightning systems for each training stage. They receive their networks; they never build them."""

from blockdistill.lightning.ar import ARSystem
from blockdistill.lightning.common import NaNLossError
from blockdistill.lightning.data import BlockDataModule, JsonlExamples
from blockdistill.lightning.rad import RADSystem
from blockdistill.lightning.trainer import build_trainer, resume_path

__all__ = ["ARSystem", "BlockDataModule", "JsonlExamples", "NaNLossError", "RADSystem", "build_trainer",
           "resume_path"]
