"""Choice fields validated against the registry that defines their choices.

A config field that names a registered thing (a training layout, a DCD target, a divergence, a
sampler cache mode, an unmasking policy) is checked against that registry itself, so the list of
valid names is written once, next to the code it names, and an entry registered later (a new cache
mode, a new layout) is accepted by every config without touching this package:

- ``layout``: :data:`blockdistill.layout.TRAINING_LAYOUTS` (RAD, full duplication);
- ``target``: :data:`blockdistill.distill.targets.TARGETS` (DCD joint-target builders);
- ``divergence``: :data:`blockdistill.losses.distill.DIVERGENCES`;
- ``cache``: :data:`blockdistill.sampling.cache.CACHE_MODES` (sampler cache strategies);
- ``policy``: :data:`blockdistill.sampling.policies.POLICIES` (unmasking policies).

A new entry is one more key in that dict (cache modes through the ``register_cache_mode``
decorator, which also refuses a name taken by another class).

Why validate lazily (the registry module is imported when a config is validated, by its dotted
name) rather than keep the names in a tiny module of this package that the registries read:
config is the bottom of the dependency chain (DESIGN.md §5), and a names module would either
write every built-in name twice (once here, once where it is implemented, free to drift apart)
or make each registry add its names here at import time, so that validation would depend on
which modules happen to have been imported. Importing the registry on demand keeps one
definition and always sees every built-in entry. Nothing in this package imports upward at
module import time: the import runs inside ``__post_init__``, at entry points, after the
library has loaded (the same way :meth:`TeacherDecodeConfig.policy` builds its policy).
"""

from __future__ import annotations

import importlib
from typing import Any

from blockdistill.config.base import check

__all__ = ["REGISTRIES", "check_choice", "choices"]

REGISTRIES: dict[str, tuple[str, str]] = {
    "layout": ("blockdistill.layout.masks", "TRAINING_LAYOUTS"),
    "target": ("blockdistill.distill.targets", "TARGETS"),
    "divergence": ("blockdistill.losses.distill", "DIVERGENCES"),
    "cache": ("blockdistill.sampling.cache", "CACHE_MODES"),
    "policy": ("blockdistill.sampling.policies", "POLICIES"),
}
"""Kind of choice -> (module, attribute) of the registry dict that defines it."""


def _registry(kind: str) -> dict[str, Any]:
    if kind not in REGISTRIES:
        raise KeyError(f"no registry for choice kind {kind!r}; known kinds: {sorted(REGISTRIES)}")
    module, attr = REGISTRIES[kind]
    return getattr(importlib.import_module(module), attr)


def choices(kind: str) -> tuple[str, ...]:
    """The names registered now for ``kind`` (one of :data:`REGISTRIES`), in registration order."""
    return tuple(_registry(kind))


def check_choice(value: str, kind: str, field_name: str) -> None:
    """Raise :class:`~blockdistill.config.ConfigError` ``"<field_name>: must be one of (...), got
    '<value>'"`` unless ``value`` is registered for ``kind``."""
    valid = choices(kind)
    check(value in valid, field_name, f"must be one of {valid}, got {value!r}")
