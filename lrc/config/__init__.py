"""Experiment configs: the typed schema (schema.py), loading with base files and overrides (loading.py) and
validation (validation.py). Nothing here imports from the layers above (data, model, train ...): they read
their defaults and enumerations from lrc.config.schema instead.

The names below are imported when first used, so that reading the schema (``lrc --help`` takes a default
from it) imports neither OmegaConf nor the validation machinery."""

from __future__ import annotations

import importlib
from typing import Any

from lrc.errors import ConfigError

_WHERE = {
    "lrc.config.schema": ("COMPONENTS", "LABELLED_SLOTS", "PLUGIN_SLOTS", "SECTIONS", "TRAINER_DEFAULTS", "defaults",
                          "head_slots", "listed_slots", "plugin_slots", "slot_node"),
    "lrc.config.loading": ("LoadedConfig", "leaf_keys", "load_config", "parse_overrides", "saved_over_defaults",
                           "spelled_as_today"),
    "lrc.config.validation": ("check_args", "check_niah", "plugin_arg", "plugin_defaults", "token_dropout_schedule",
                              "validate"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = ["ConfigError", *sorted(_MODULE_OF)]


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'lrc.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
