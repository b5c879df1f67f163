"""Experiment configs: the typed schema, loading (base files, overrides) and validation."""

from lrc.config.validation import (PLUGIN_SLOTS, SECTIONS, LoadedConfig, head_slots, leaf_keys, load_config,
                                   parse_overrides, plugin_arg, plugin_slots, slot_node, token_dropout_schedule,
                                   validate)
from lrc.errors import ConfigError

__all__ = ["PLUGIN_SLOTS", "SECTIONS", "ConfigError", "LoadedConfig", "head_slots", "leaf_keys", "load_config",
           "parse_overrides", "plugin_arg", "plugin_slots", "slot_node", "token_dropout_schedule", "validate"]
