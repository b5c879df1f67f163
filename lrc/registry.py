"""One registry per plugin kind.

A plugin reaches a registry in one of two ways, and both end in the same table:

* a built-in or third-party module decorates its class with ``@COMPRESSORS.register("name")``;
* a package declares an entry point in the group ``lrc.<kind>`` (``lrc.compressors`` ...). Listing
  reads entry-point *names* without importing anything; a plugin module is imported only when a
  config asks for that name. lrc's own built-ins are declared through the same entry points, so a
  third-party package is a first-class citizen and needs no edit to lrc.

Two different objects under one name is an error naming both origins, never a silent override.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as metadata
from dataclasses import dataclass
from typing import Any, Callable
from lrc.errors import LrcError


class PluginError(LrcError, LookupError):
    """A plugin name that does not resolve, or two plugins that claim one name."""


class PluginBuildError(LrcError, ValueError):
    """A plugin's constructor refused its arguments or failed; the message names plugin, kind and package."""


def origin(obj: Any) -> str:
    """``module:qualname`` of a class or function, the way errors and run configs name a plugin."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{hint} Known: {', '.join(sorted(known)) or '(none)'}."


@dataclass(frozen=True)
class _EntryPoint:
    name: str
    value: str  # "module:attr"
    dist: str  # distribution that declared it

    def describe(self) -> str:
        return f"{self.value} (entry point of package {self.dist!r})"


class Registry:
    """Name → plugin class for one kind of plugin.

    ``provided`` lists constructor arguments that the builder fills in from other built objects
    (dimensions, token counts). They are part of the plugin's signature but must not be set in YAML.
    """

    def __init__(self, kind: str, provided: tuple[str, ...] = ()):
        self.kind = kind
        self.group = f"lrc.{kind}"
        self.provided = provided
        self._table: dict[str, Any] = {}

    # -- registration -----------------------------------------------------------------------
    def register(self, name: str) -> Callable[[Any], Any]:
        if not name.isidentifier() or name != name.lower():
            raise ValueError(f"{self.kind} plugin name {name!r} must be a snake_case identifier")

        def decorate(obj: Any) -> Any:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: Any) -> None:
        old = self._table.get(name)
        if old is not None and old is not obj and origin(old) != origin(obj):
            raise PluginError(
                f"two {self.kind} plugins are registered as {name!r}: {origin(old)} and {origin(obj)}. "
                "Rename one of them (the registered name is the first argument of the decorator "
                f"or the entry-point name in group {self.group!r})."
            )
        self._table[name] = obj

    # -- discovery --------------------------------------------------------------------------
    def _entry_points(self) -> dict[str, _EntryPoint]:
        found: dict[str, _EntryPoint] = {}
        for ep in metadata.entry_points(group=self.group):
            dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
            new = _EntryPoint(ep.name, ep.value, dist)
            old = found.get(ep.name)
            # The same distribution can be seen twice (an editable install plus a build/ copy);
            # only two *different* targets are a conflict.
            if old is not None and old.value != new.value:
                raise PluginError(
                    f"two {self.kind} plugins are declared as {ep.name!r}: {old.describe()} and "
                    f"{new.describe()}. Uninstall or rename one of them."
                )
            found[ep.name] = new
        return found

    def names(self) -> list[str]:
        """Every known name, without importing any plugin module."""
        return sorted(set(self._entry_points()) | set(self._table))

    def __contains__(self, name: str) -> bool:
        return name in self._table or name in self._entry_points()

    def get(self, name: str) -> Any:
        if name in self._table:
            return self._table[name]
        eps = self._entry_points()
        if name not in eps:
            raise PluginError(f"unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} "
                              f"plugin {name!r}.{suggest(name, self.names())} A plugin from another package is "
                              f"found once that package is installed in this Python environment "
                              f"(it declares an entry point in group {self.group!r}; docs/plugins.md).")
        ep = eps[name]
        module_name, _, attr = ep.value.partition(":")
        try:
            module = importlib.import_module(module_name)
            obj = module
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - re-raised with the plugin's name attached
            raise PluginError(
                f"{self.kind} plugin {name!r} could not be loaded from {ep.describe()}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        # Importing the module usually registered it through the decorator already; add() checks
        # that the decorator and the entry point agree on what the name means.
        self.add(name, obj)
        return obj

    def origin_of(self, name: str) -> str:
        return origin(self.get(name))

    def package_of(self, name: str) -> tuple[str, str]:
        """``(distribution, version)`` that provides plugin ``name``: the package declaring its entry point,
        else the one installing its module (a plugin registered by a decorator only)."""
        ep = self._entry_points().get(name)
        dist = ep.dist if ep is not None and ep.dist != "?" else None
        if dist is None:
            top = getattr(self.get(name), "__module__", "?").split(".")[0]
            dist = (metadata.packages_distributions().get(top) or [top])[0]
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            return dist, "unknown"

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


# The kinds. ``provided`` = arguments the builder passes; see lrc/train/build.py for where they come from.
ENCODERS = Registry("encoders")
COMPRESSORS = Registry("compressors", provided=("in_dim", "frame_tokens"))
PROJECTORS = Registry("projectors", provided=("in_dim", "out_dim"))
LLMS = Registry("llms", provided=("vocab_size", "new_token_ids"))
HEADS = Registry("heads", provided=("hidden_size",))
SAMPLERS = Registry("samplers", provided=("clip_len",))
# how a conversation and its video are laid out as text (lrc/data/prompt.py; the model's chat template)
PROMPTS = Registry("prompts")
# how a fit is run (lrc/train/run.py, docs/logging.md): where metrics go (run.loggers: Lightning loggers; the run
# folder's logs/ and a run name are provided), what runs beside training (run.callbacks: Lightning callbacks),
# and which torch optimizer steps the per-component parameter groups (optim.optimizer; the groups are provided)
LOGGERS = Registry("loggers", provided=("save_dir", "run_name"))
CALLBACKS = Registry("callbacks")
OPTIMIZERS = Registry("optimizers", provided=("params",))

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (ENCODERS, COMPRESSORS, PROJECTORS, LLMS, HEADS, SAMPLERS, PROMPTS, LOGGERS, CALLBACKS,
                        OPTIMIZERS)
}
