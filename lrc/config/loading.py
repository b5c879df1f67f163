"""Experiment configs: OmegaConf YAML with base files and command-line overrides, and where each key came from.

Loading (``load_config``):
  1. the built-in defaults (lrc/config/schema.py);
  2. each file named in ``base: [...]`` (paths relative to the file naming them, recursively), in order;
  3. the experiment file itself;
  4. ``key=value`` overrides from the command line.
A plugin slot (``model.compressor`` ...) is a mapping with a ``name``. When a later layer changes a
slot's ``name``, arguments from earlier layers that the new plugin does not accept are dropped, so
``model.compressor.name=pooling`` switches plugin without tripping over ToMe-only arguments while the
shared vocabulary (``clip_len``, ``tokens_per_frame``) carries over.

Every key remembers the file (or "command line") that last set it, so validation
(lrc/config/validation.py) can say where each problem is.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lrc.config.schema import defaults, plugin_slots, slot_node
from lrc.errors import ConfigError
from lrc.registry import PluginError, Registry

PROVENANCE = "_lrc"  # the block RUN_DIR/config.yaml adds: lrc's version, the source file, each plugin's origin


@dataclass
class LoadedConfig:
    cfg: DictConfig
    path: Path | None
    sources: dict[str, str]  # dotted key -> file (or "command line") that last set it
    # each value's own source: leaf key (as leaf_keys spells it) -> the file (or "command line") that set it;
    # a leaf that is absent here has lrc's default (`lrc config show`)
    value_sources: dict[str, str] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)  # the sources, lowest precedence first

    def source(self, key: str) -> str:
        parts = str(key).split(".")
        for n in range(len(parts), 0, -1):
            found = self.sources.get(".".join(parts[:n]))
            if found:
                return found
        return "defaults"

    def to_container(self) -> dict[str, Any]:
        return OmegaConf.to_container(self.cfg, resolve=True)  # type: ignore[return-value]


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> list[tuple[dict[str, Any], str]]:
    """The file's bases (recursively) then the file, as plain dicts with their source names."""
    if path in chain:
        raise ConfigError([f"{path}: base: circular base chain: {' -> '.join(map(str, chain + (path,)))}"])
    if not path.is_file():
        where = f"{chain[-1]}: base" if chain else "command line"
        raise ConfigError([f"{where}: config file {path} does not exist"])
    try:
        node = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as exc:  # noqa: BLE001 - YAML syntax errors of all kinds
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(node, DictConfig):
        raise ConfigError([f"{path}: the top level must be a mapping of sections, got a list"])
    data = OmegaConf.to_container(node, resolve=False)
    # a run's RUN_DIR/config.yaml is an experiment too; its provenance block (lrc/train/run.py) is not config
    data.pop(PROVENANCE, None)
    bases = data.pop("base", None) or []
    if isinstance(bases, str):
        bases = [bases]
    layers: list[tuple[dict[str, Any], str]] = []
    for base in bases:
        layers += _read_yaml((path.parent / base).resolve(), chain + (path,))
    layers.append((data, str(path)))
    return layers


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            out[key] = v
            out.update(_flatten(v, key))
    return out


def leaf_keys(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}``: how overrides are compared and written as ``key=value``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(leaf_keys(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def _switch_plugins(merged: dict[str, Any], layer: dict[str, Any]) -> None:
    """Drop a slot's earlier arguments that a newly named plugin does not accept (see module doc)."""
    for slot, registry in plugin_slots(layer).items():
        new, old = slot_node(layer, slot), slot_node(merged, slot)
        if not isinstance(new, dict) or not isinstance(old, dict) or "name" not in new:
            continue
        if new["name"] == old.get("name"):
            continue
        accepted = _accepted_args(registry, new["name"])
        parent = slot_node(merged, slot.rsplit(".", 1)[0])
        parent[slot.rsplit(".", 1)[1]] = {k: v for k, v in old.items()
                                          if k == "name" or (accepted is not None and k in accepted)}


def _accepted_args(registry: Registry, name: Any) -> set[str] | None:
    try:
        params = inspect.signature(registry.get(name)).parameters
    except (PluginError, TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - {"self"}


def _deep_merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    for k, v in layer.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError([f"command line: {o!r}: overrides look like key=value (e.g. model.compressor.name=tome)"
                           for o in bad])
    import yaml

    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=False)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError([f"command line: cannot parse overrides: {exc}"]) from exc
    except yaml.YAMLError as exc:  # a `!!python/...` tag (never constructed) or broken YAML in a value
        what = str(exc).strip().splitlines()[0][:200]
        raise ConfigError([f"command line: cannot parse overrides: not valid YAML ({what}); values are plain YAML "
                           "(numbers, strings, [lists], {mappings}), tags such as !!python/... are refused"]) from exc


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> LoadedConfig:
    layers: list[tuple[dict[str, Any], str]] = []
    if path is not None:
        path = Path(path).resolve()
        layers = _read_yaml(path, ())
    if overrides:
        layers.append((parse_overrides(overrides), "command line"))
    merged = defaults()
    sources: dict[str, str] = {}
    value_sources: dict[str, str] = {}
    for data, source in layers:
        _switch_plugins(merged, data)
        _deep_merge(merged, data)
        for key in _flatten(data):
            sources[key] = source
        _note_value_sources(value_sources, data, source)
    return LoadedConfig(OmegaConf.create(merged), Path(path) if path else None, sources, value_sources,
                        [source for _, source in layers])


def _note_value_sources(value_sources: dict[str, str], layer: dict[str, Any], source: str) -> None:
    """Each leaf a layer sets now comes from ``source``; a value that replaces a whole mapping (a list, null)
    drops the sources of what was under it. An empty mapping merges nothing, so it changes no source."""
    for key, value in leaf_keys(layer).items():
        below = [k for k in value_sources if k.startswith(key + ".")]
        if value == {} and below:
            continue
        for k in below:
            del value_sources[k]
        value_sources[key] = source


def spelled_as_today(data: dict[str, Any]) -> dict[str, Any]:
    """A run config written before a key moved, with the key where the schema has it now, so that such a run
    still resumes: ``optim.betas`` is AdamW's argument ``optim.optimizer.betas`` (every run used AdamW then)."""
    optim = data.get("optim")
    if isinstance(optim, dict) and "betas" in optim and "optimizer" not in optim:
        optim["optimizer"] = {"name": "adamw", "betas": optim.pop("betas")}
    return data


def saved_over_defaults(saved: dict[str, Any]) -> DictConfig:
    """A config saved by a run or an export, spelled as today and laid over lrc's defaults, so that a run saved
    by an older lrc (before a section such as ``eval`` existed, or a key moved) still loads and resumes."""
    return OmegaConf.merge(OmegaConf.create(defaults()), OmegaConf.create(spelled_as_today(saved)))
