"""The config layer's base: :class:`ConfigError`, the one field check and the one YAML loader.

Every config field is documented right under it and validated in ``__post_init__``; a bad value
raises :class:`ConfigError` naming the field. YAML files and ``key=value`` command-line
overrides are merged by OmegaConf and turned into these objects only at entry points
(:func:`load_config`); library classes take explicit arguments, never a config object.

Example::

    cfg = load_config(RADTrainConfig, "configs/rad.yaml", ["block.block_size=8", "optim.lr=1e-4"])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["ATTN_BACKENDS", "ConfigError", "check", "load_config", "to_yaml"]

ATTN_BACKENDS = ("sdpa", "eager", "flex_attention", "xformers")
"""Attention backends: SDPA with a dense mask (default, trains on CPU), eager with an additive
float mask, flex_attention with a block mask (GPU training, inference anywhere) and xformers
(optional, GPU only)."""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field."""


def check(cond: bool, field_name: str, msg: str) -> None:
    """Raise :class:`ConfigError` ``"<field_name>: <msg>"`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(f"{field_name}: {msg}")


T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | list[str | Path] | None = None,
                overrides: list[str] | None = None) -> T:
    """Build a ``cls`` instance from its defaults, YAML file(s) (merged in order) and ``key=value`` overrides.

    Unknown keys and ill-typed values raise :class:`ConfigError` naming the key; values
    rejected by a dataclass's ``__post_init__`` raise :class:`ConfigError` naming the field.
    """
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    try:
        layers = [OmegaConf.structured(cls)]
        for p in map(Path, paths):
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist")
            layers.append(OmegaConf.load(p))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{key or '?'}: {msg}") from None


def to_yaml(cfg: Any) -> str:
    """Render a config dataclass back to YAML (saved next to every run for reproducibility)."""
    return OmegaConf.to_yaml(OmegaConf.structured(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg))
