"""Configuration: dataclasses with a docstring per field and validation in ``__post_init__``,
merged from YAML and ``key=value`` overrides by OmegaConf at entry points only.

- :mod:`blockdistill.config.base`: :class:`ConfigError`, the field check and :func:`load_config`;
- :mod:`blockdistill.config.training`: block rules, noise, optimiser, trainer, model, data, and
  the AR / RAD stage configs;
- :mod:`blockdistill.config.distill`: teacher decoding, the DCD objective, collection and DCD.
"""

from blockdistill.config.base import ATTN_BACKENDS, ConfigError, check, load_config, to_yaml
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
    ModelConfig,
    NoiseConfig,
    OptimConfig,
    RADTrainConfig,
    TrainerConfig,
)

__all__ = [
    "ATTN_BACKENDS", "ARTrainConfig", "BlockConfig", "CollectConfig", "ConfigError", "DCDTrainConfig",
    "DataConfig", "DistillConfig", "ModelConfig", "NoiseConfig", "OptimConfig", "RADTrainConfig",
    "TeacherDecodeConfig", "TrainerConfig", "check", "load_config", "to_yaml",
]
