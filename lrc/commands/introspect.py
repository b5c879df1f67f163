"""``lrc config show`` and ``lrc plugins show``: what a config resolves to and where each value came from, and
what a plugin takes (docs/config.md, docs/plugins.md).

A value comes from one of: lrc's default (the schema, lrc/config/schema.py), a YAML file of the config's
``base:`` chain or the config itself, the command line, or, for a plugin argument no layer set, the plugin's
signature default. ``config show`` prints the resolved config as YAML with that source after each value.

A plugin's arguments are its constructor's signature (names, annotations with their ranges and choices,
defaults: the code), and each argument's documentation is the ``Args:`` section of the plugin class's
docstring (Google style, one ``name: text`` entry per argument) — the code is the one source of both; the
contract test tests/commands/test_introspect.py holds every built-in plugin to documenting every argument.
Neither command imports torch beyond what the plugin modules they name import (``config show --raw`` and
``plugins list`` import none).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

LRC_DEFAULT = "lrc default"


# ---------------------------------------------------------------------------------------------
# lrc config show
# ---------------------------------------------------------------------------------------------
def value_sources(loaded: Any, cfg: dict[str, Any]) -> dict[str, str]:
    """``{leaf key: where its value came from}`` for every leaf of ``cfg`` (a loaded config, validated or not)."""
    from lrc.config.loading import leaf_keys
    from lrc.config.schema import plugin_slots, slot_node

    slots = plugin_slots(cfg)
    out = {}
    for key in leaf_keys(cfg):
        source = loaded.value_sources.get(key)
        if source is None:
            slot = max((s for s in slots if key.startswith(s + ".")), key=len, default=None)
            node = slot_node(cfg, slot) if slot else None
            if slot is not None and isinstance(node, dict) and key != f"{slot}.name" and node.get("name") is not None:
                source = f"default of {slots[slot].kind} plugin {node['name']}"
            else:
                source = LRC_DEFAULT
        out[key] = _relative(source)
    return out


def _relative(source: str) -> str:
    try:
        return str(Path(source).relative_to(Path.cwd()))
    except ValueError:
        return source


def _flow(value: Any) -> str:
    """A value as one line of YAML (flow style), as it would be written in a config."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def render_config(cfg: dict[str, Any], sources: dict[str, str]) -> str:
    """The config as YAML, each value followed by ``# its source`` (comments aligned)."""
    rows: list[tuple[str, str | None]] = []

    def walk(node: dict[str, Any], prefix: str, indent: int) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                rows.append((" " * indent + f"{k}:", None))
                walk(v, key + ".", indent + 2)
            else:
                rows.append((" " * indent + f"{k}: {_flow(v)}", sources.get(key)))

    walk(cfg, "", 0)
    width = min(60, max((len(text) for text, source in rows if source), default=0))
    return "\n".join(text if source is None else f"{text.ljust(width)}  # {source}" for text, source in rows)


def show_config(path: str, overrides: list[str], raw: bool = False, as_json: bool = False) -> tuple[str, list[str]]:
    """The text ``lrc config show`` prints, and the config's problems (validation's; none with ``raw``).

    Without ``raw`` the config is validated as a run would validate it, so it has every plugin's defaults (the
    plugin modules named are imported). With ``raw``, or when the config does not validate, it is the merge of
    lrc's defaults, the files and the command line."""
    from lrc.config import ConfigError, load_config, validate

    loaded = load_config(path, overrides)
    problems: list[str] = []
    cfg = loaded.to_container()
    if not raw:
        try:
            cfg = validate(loaded)
        except ConfigError as exc:
            problems = list(exc.problems)
    sources = value_sources(loaded, cfg)
    if as_json:
        from lrc.config.loading import leaf_keys

        return json.dumps({k: {"value": v, "source": sources[k]} for k, v in leaf_keys(cfg).items()}, indent=1), problems
    order = ", ".join([LRC_DEFAULT, *map(_relative, loaded.layers)])
    what = "merged, not validated" if raw or problems else "resolved and validated, with every plugin's defaults"
    header = (f"# {_relative(str(loaded.path)) if loaded.path else 'defaults'} ({what})\n"
              f"# after each value, where it was set; lowest first: {order}\n")
    return header + render_config(cfg, sources), problems


# ---------------------------------------------------------------------------------------------
# lrc plugins show
# ---------------------------------------------------------------------------------------------
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s*$")
_ENTRY = re.compile(r"^(\*{0,2}\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)$")


def argument_docs(cls: Any) -> dict[str, str]:
    """``{argument: its documentation}`` from the ``Args:`` section of the class's (or its ``__init__``'s)
    docstring: one ``name: text`` entry per argument, continuation lines indented further; a blank line starts
    a new paragraph (kept as a line break)."""
    found: dict[str, list[str]] = {}
    for doc in (_own_doc(cls), _own_doc(vars(cls).get("__init__")) if inspect.isclass(cls) else ""):
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            section = _SECTION.match(line)
            if not section:
                continue
            base, entry_indent, current = len(section.group(1)), None, None
            for body in lines[i + 1:]:
                indent = len(body) - len(body.lstrip())
                if body.strip() and indent <= base:
                    break
                entry = _ENTRY.match(body.strip())
                if entry and (entry_indent is None or indent <= entry_indent):
                    entry_indent, current = indent, entry.group(1).lstrip("*")
                    found[current] = [entry.group(2)]
                elif current:
                    found[current].append(body.strip())  # "" for a blank line: a paragraph break
    return {name: "\n".join(" ".join(p.split()) for p in " ".join(w or "\n" for w in words).split("\n")
                              if p.strip())
            for name, words in found.items()}


def _own_doc(obj: Any) -> str:
    """The object's own docstring, cleaned; not one inherited from a base class (nn.Module's says nothing of the
    plugin)."""
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _default_text(value: Any) -> str:
    text = _flow(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else text[:60] + f"… ({len(text)} characters)"


def _summary(cls: Any) -> str:
    """The docstring's first paragraph."""
    return _own_doc(cls).split("\n\n")[0].strip()


def _list_slots(registry: Any) -> list[str]:
    """The config keys that hold a list of this registry's plugins (``run.loggers`` ...)."""
    import dataclasses

    from lrc.config.schema import SECTIONS, hints, plugin_list_marker

    found = []

    def walk(schema: type, prefix: str) -> None:
        for key, annotation in hints(schema).items():
            marker = plugin_list_marker(annotation)
            if marker is not None and marker.registry is registry:
                found.append(f"{prefix}.{key}")
            elif isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
                walk(annotation, f"{prefix}.{key}")

    for section, schema in SECTIONS.items():
        walk(schema, section)
    return found


def show_plugin(kind: str, name: str) -> str:
    """The text ``lrc plugins show KIND NAME`` prints: where the plugin comes from, what it is, which config slot
    takes it, and each argument with its type (and range or choices), default and documentation."""
    import textwrap

    from lrc.config.schema import LABELLED_SLOTS, PLUGIN_SLOTS
    from lrc.config.validation import signature_of
    from lrc.constraints import type_name
    from lrc.errors import ConfigError
    from lrc.registry import REGISTRIES, suggest

    if kind not in REGISTRIES and f"{kind}s" in REGISTRIES:  # `plugins show compressor tome`
        kind = f"{kind}s"
    if kind not in REGISTRIES:
        raise ConfigError([f"command line: no plugin kind {kind!r}.{suggest(kind, list(REGISTRIES))}"])
    registry = REGISTRIES[kind]
    cls = registry.get(name)
    package, version = registry.package_of(name)
    params, annotations = signature_of(cls)
    docs = {k: v.replace("``", "`") for k, v in argument_docs(cls).items()}  # reST literals, as a terminal reads them
    slots = [f"{s}: {{name: {name}, ...}}" for s, r in PLUGIN_SLOTS.items() if r is registry] + \
            [f"{s}.<label>: {{name: {name}, ...}}" for s, r in LABELLED_SLOTS.items() if r is registry] + \
            [f"{s}: [{{name: {name}, ...}}]" for s in _list_slots(registry)]
    lines = [f"{kind} plugin {name!r}: {registry.origin_of(name)} (package {package} {version})"]
    summary = _summary(cls).replace("``", "`")
    if summary:
        lines += ["", textwrap.fill(" ".join(summary.split()), 100)]
    if slots:
        lines += ["", "in a config: " + "; ".join(slots)]
    lines += ["", "arguments:"]
    settable = [n for n, p in params.items() if n not in registry.provided
                and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for n in settable:
        p = params[n]
        default = "required" if p.default is p.empty else f"default {_default_text(p.default)}"
        lines.append(f"  {n}: {type_name(annotations.get(n, p.annotation))}; {default}")
        for paragraph in (docs.get(n) or "(not documented)").split("\n"):
            lines += textwrap.wrap(paragraph, 96, initial_indent="      ", subsequent_indent="      ") or [""]
    if not settable:
        lines.append("  (none)")
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        lines.append("  ... and any other keyword argument")
    provided = [n for n in registry.provided if n in params]
    if provided:
        lines += ["", f"set by lrc from the other components (not in YAML): {', '.join(provided)}"]
    return "\n".join(lines)
