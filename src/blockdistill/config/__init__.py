"""Configuration: dataclasses with a docstring per field and validation in ``__post_init__``,
merged from YAML and ``key=value`` overrides by OmegaConf at entry points only.

- :mod:`blockdistill.config.base`: :class:`ConfigError`, the field check and :func:`load_config`;
- :mod:`blockdistill.config.choices`: fields that name a registered thing, checked against its registry;
- :mod:`blockdistill.config.training`: block rules, noise, optimiser, trainer, model, data, and
  the sections every stage shares (:class:`StageConfig`) and the AR / RAD stage configs;
- :mod:`blockdistill.config.distill`: teacher decoding, the DCD objective, collection and DCD.
"""

from blockdistill.config.base import ATTN_BACKENDS, ConfigError, check, load_config, to_yaml
from blockdistill.config.choices import check_choice, choices
from blockdistill.config.distill import (
    CollectConfig,
    DCDTrainConfig,
    DistillConfig,
    TeacherDecodeConfig,
)
from blockdistill.config.training import (
    ARTrainConfig,
    BlockConfig,
    DataConfig,
    LoraConfig,
    ModelConfig,
    NoiseConfig,
    OptimConfig,
    RADTrainConfig,
    StageConfig,
    TrainerConfig,
    TrainStageConfig,
)

__all__ = [
    "ATTN_BACKENDS", "ARTrainConfig", "BlockConfig", "CollectConfig", "ConfigError", "DCDTrainConfig",
    "DataConfig", "DistillConfig", "LoraConfig", "ModelConfig", "NoiseConfig", "OptimConfig", "RADTrainConfig",
    "StageConfig", "TeacherDecodeConfig", "TrainStageConfig", "TrainerConfig", "check", "check_choice", "choices",
    "load_config", "to_yaml",
]
