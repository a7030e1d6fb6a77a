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

import yaml
from omegaconf import DictConfig, OmegaConf
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
    rejected by a dataclass's ``__post_init__`` raise :class:`ConfigError` naming the field;
    malformed YAML names the file, line and column. A dictionary-valued setting (``model.tiny``)
    takes overrides key by key (``model.tiny.hidden_size=32``) or as a flow mapping
    (``'model.tiny={model_type: llama, hidden_size: 32}'``), merged into the file's mapping.
    """
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    try:
        layers = [OmegaConf.structured(cls)]
        for p in map(Path, paths):
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist")
            layers.append(_load_yaml(p))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            for o in overrides:  # one at a time, so a malformed value names its override
                try:
                    layers.append(OmegaConf.from_dotlist([o]))
                except yaml.YAMLError as e:
                    raise ConfigError(f"override {o!r}: its value is not valid YAML "
                                      f"({_yaml_problem(e)})") from None
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{key or '?'}: {msg}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    return f"{context}: {problem}" if context else str(problem)


def _load_yaml(path: Path) -> DictConfig:
    """One config file as a mapping; malformed YAML is a :class:`ConfigError` with file:line:col."""
    try:
        loaded = OmegaConf.load(path)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at "
                          f"offset {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: malformed YAML: {_yaml_problem(e)}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, "
                          f"got a {type(loaded).__name__}")
    return loaded


def to_yaml(cfg: Any) -> str:
    """Render a config dataclass back to YAML (saved next to every run for reproducibility)."""
    return OmegaConf.to_yaml(OmegaConf.structured(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg))
