"""Stage recipes: the composition of model, data, Lightning system and trainer for each stage,
as functions of explicit arguments (never a whole config object). The CLI and the ECHO example
both call them.

- :mod:`blockdistill.recipes.models`: :func:`wrap_for_stage`, a loaded backbone with the block
  rules a stage needs (the saved model's, or an AR model converted);
- :mod:`blockdistill.recipes.train`: :func:`train_ar`, :func:`train_rad` (and :func:`fit`,
  :func:`block_data`, :func:`save_trained`); RAD and DCD take ``lora=LoraConfig(...)``;
- :mod:`blockdistill.recipes.distill`: :func:`collect`, :func:`train_dcd` (and
  :func:`trajectory_data`, :func:`predict_trainer`).
"""

from blockdistill.recipes.distill import collect, predict_trainer, train_dcd, trajectory_data
from blockdistill.recipes.models import AR_CONVERSION_SHIFT, wrap_for_stage
from blockdistill.recipes.train import (
           StageResult,
           block_data,
           fit,
           save_trained,
           train_ar,
           train_rad,
)

__all__ = ["AR_CONVERSION_SHIFT", "StageResult", "block_data", "collect", "fit", "predict_trainer", "save_trained",
           "train_ar", "train_dcd", "train_rad", "trajectory_data", "wrap_for_stage"]
