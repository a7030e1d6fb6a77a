"""Unknown keys under ``model.tiny`` (and its nested ``text_config``/``vision_config``) are errors.

A Hugging Face config accepts any keyword and stores it as an attribute, so a typo such as
``model.tiny.hiden_size=32`` would silently build a model of the default width. The keys a
config class knows are those of its default instance (every documented field) plus those of
its sub-configs: ``text_config``/``vision_config`` are checked recursively, and a composite
config's top level also takes its text model's keys (transformers forwards them there).

    check_model_keys({"model_type": "qwen2", "hiden_size": 32}, "model.tiny")
    # ConfigError: model.tiny.hiden_size: not a setting of Qwen2Config; did you mean 'hidden_size'?
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

from .base import ConfigError

__all__ = ["check_model_keys"]


@cache
def _known(cls: type) -> frozenset[str]:
    keys = set(cls().to_dict())
    text = getattr(cls, "sub_configs", {}).get("text_config")
    if text is not None:
        keys |= _known(text)
    return frozenset(keys | set(getattr(cls, "attribute_map", {})))


def _check(cls: type, settings: dict[str, Any], where: str) -> None:
    known = _known(cls)
    subs = getattr(cls, "sub_configs", {})
    for key, value in settings.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}.{key}: not a setting of {cls.__name__}{hint}")
        if key in subs and isinstance(value, dict):
            _check(subs[key], value, f"{where}.{key}")


def check_model_keys(settings: dict[str, Any], where: str = "model.tiny") -> None:
    """Raise :class:`ConfigError` naming the first key ``settings`` that its config class lacks."""
    from transformers import CONFIG_MAPPING

    model_type = settings.get("model_type")
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}.model_type: unknown model type {model_type!r}{hint}")
    _check(CONFIG_MAPPING[model_type], settings, where)
