"""The plan of an ablation: its YAML file read, checked and expanded into cells (docs/ablations.md).

Every problem with the file itself (unknown keys, a grid value that does not survive the command line,
a key no config has, overrides that undo what the ablation varies) is a ConfigError raised here, before
anything runs; :func:`validate_cells` then resolves and validates each cell's experiment config, and
:func:`check_out_dir` / :func:`write_plan` keep one output folder to one plan, so that re-running the
same command resumes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lrc.commands.ablate.executors import check_executor_block
from lrc.config import SECTIONS, ConfigError, leaf_keys, load_config, parse_overrides, validate
from lrc.ops import is_int
from lrc.registry import suggest

ABLATION_KEYS = ("name", "description", "base", "grid", "cells", "seeds", "metrics", "overrides", "executor")
CELL_KEYS = ("base", "label")  # what a `cells:` entry may hold besides config keys
BASE_VALUE = "(base)"  # a `cells:` key that this cell leaves at its base config's value


@dataclass
class Cell:
    slug: str  # its folder under DIR/cells: from the varied values, stable and filesystem-safe
    base: Path  # the experiment config it starts from
    overrides: list[str]  # key=value, as `lrc fit` gets them
    varied: dict[str, Any]  # table column -> value; the same columns, in the same order, for every cell
    seed: int | None = None  # from `seeds:` (None: the config's own run.seed)


@dataclass
class Plan:
    name: str
    source: Path
    description: str
    cells: list[Cell]
    axes: list[str]  # the varied columns, in order; the first is the plots' x axis
    metrics: list[str] | None  # None: every val/* metric found
    seeds: list[int] | None
    command_line: list[str]
    # `executor: {slurm: {...}}`: submitit's parameters per executor (executors.py); not part of what a cell is
    executor: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_plan(path: str | Path, command_line: list[str] | tuple[str, ...] = ()) -> Plan:
    """Read and expand an ablation file; every problem with the file itself is a ConfigError."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError([f"command line: ablation file {path} does not exist"])
    try:
        doc = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # noqa: BLE001 - YAML syntax errors of all kinds
        raise ConfigError([f"{where}: not valid YAML: {exc}"]) from exc
    if not isinstance(doc, dict) or set(doc) != {"ablation"} or not isinstance(doc["ablation"], dict):
        hint = (" It looks like an experiment config: run it with `lrc fit`, or name it as `base:` of an "
                "ablation file." if isinstance(doc, dict) and set(doc) & set(SECTIONS) else "")
        raise ConfigError([f"{where}: an ablation file holds one mapping, `ablation:` (name, base, grid or cells, "
                           f"seeds, metrics, overrides, executor; docs/ablations.md).{hint}"])
    spec = doc["ablation"]
    problems = [f"{where}: ablation.{k}: unknown key.{suggest(str(k), list(ABLATION_KEYS))}"
                for k in spec if k not in ABLATION_KEYS]

    name = spec.get("name", path.stem)
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: ablation.name: expected a non-empty string, got {name!r}")
        name = path.stem
    description = spec.get("description") or ""
    base = _base_path(path, spec.get("base"), "ablation.base", problems)
    overrides = _mapping(spec.get("overrides") or {}, f"{where}: ablation.overrides", problems)

    if ("grid" in spec) == ("cells" in spec):
        problems.append(f"{where}: ablation: give either `grid:` (a cartesian product of values per key) or `cells:` "
                        "(a list of override mappings), not " + ("both" if "grid" in spec else "neither"))
        raise ConfigError(problems)
    if "grid" in spec:
        if base is None and not problems:
            problems.append(f"{where}: ablation.base: required with `grid:` (the experiment config every cell "
                            "starts from)")
        entries, axes = _grid_entries(spec["grid"], where, problems)
    else:
        entries, axes = _cell_entries(path, spec["cells"], base, problems)
    seeds = spec.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or
                              not all(is_int(s) for s in seeds)
                              or len(set(seeds)) != len(seeds)):
        problems.append(f"{where}: ablation.seeds: expected a list of distinct integers such as [0, 1, 2], "
                        f"got {seeds!r}")
        seeds = None
    metrics = spec.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not metrics or
                                not all(isinstance(m, str) for m in metrics)):
        problems.append(f"{where}: ablation.metrics: expected a list of metrics.json keys such as [val/mcq_acc], "
                        f"got {metrics!r}")
        metrics = None

    executor = spec.get("executor") or {}
    problems += check_executor_block(executor, where)

    # the overrides and the command line apply to every cell; they may not undo what the ablation varies
    varied_keys = set(axes) | ({"run.seed"} if seeds else set())
    problems += [f"{where}: ablation.overrides: {k} is also varied by the {'seeds' if k not in axes else 'cells'}; "
                 "keep it in one place" for k in overrides if k in varied_keys]
    command_line = list(command_line)
    for key in leaf_keys(parse_overrides(command_line)):
        if key in varied_keys:
            problems.append(f"command line: {key}: varied by the ablation ({where}); remove it from the command line "
                            "or edit the ablation file")
        elif (problem := _key_problem(key)) is not None:
            problems.append(f"command line: {key}: {problem}")
    if problems:
        raise ConfigError(problems)

    cells = []
    for entry_base, values, varied in entries:
        for seed in seeds or [None]:
            ordered = {**{k: _override(k, v) for k, v in overrides.items()},
                       **{k: _override(k, v) for k, v in values.items()}}
            if seed is not None:
                ordered["run.seed"] = f"run.seed={seed}"
            for o in command_line:
                ordered[o.split("=", 1)[0]] = o
            slug = _slug(varied) + (f"__seed-{seed}" if seeds and len(seeds) > 1 else "")
            cells.append(Cell(slug, entry_base or base, list(ordered.values()), varied, seed))
    _make_slugs_unique(cells)
    columns = list(cells[0].varied) if cells else []
    return Plan(name, path, str(description), cells, columns, metrics, seeds, command_line, executor)


def _base_path(ablation: Path, value: Any, key: str, problems: list[str]) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{ablation}: {key}: expected the path of an experiment config, got {value!r}")
        return None
    path = (ablation.parent / value).resolve()
    if not path.is_file():
        problems.append(f"{ablation}: {key}: experiment config {path} does not exist (paths are relative to the "
                        "ablation file)")
        return None
    return path


def _mapping(node: Any, where: str, problems: list[str]) -> dict[str, Any]:
    """A mapping of config keys (dotted, or nested mappings of them) as flat dotted keys."""
    if not isinstance(node, dict):
        problems.append(f"{where}: expected a mapping of config keys such as {{trainer.max_epochs: 3}}, got {node!r}")
        return {}
    flat = leaf_keys(node)
    for key, value in flat.items():
        problem = _key_problem(key)
        if problem is not None:
            problems.append(f"{where}: {key}: {problem}")
        else:
            try:
                _override(key, value)
            except ValueError as exc:
                problems.append(f"{where}: {key}: {exc}")
    return flat


def _grid_entries(grid: Any, where: str, problems: list[str]) -> tuple[list[tuple[Any, dict, dict]], list[str]]:
    if not isinstance(grid, dict) or not grid:
        problems.append(f"{where}: ablation.grid: expected a mapping of config keys to lists of values, such as "
                        "{model.compressor.name: [tome, pooling]}; got " + repr(grid))
        raise ConfigError(problems)
    flat: dict[str, Any] = {}
    for key, values in grid.items():
        if isinstance(values, dict):  # nested keys, e.g. {model: {compressor: {name: [...]}}}
            for sub, v in leaf_keys(values).items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[str(key)] = values
    for key, values in flat.items():
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: ablation.grid.{key}: expected a non-empty list of values, got {values!r}")
        elif len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            problems.append(f"{where}: ablation.grid.{key}: repeated values in {values!r}")
    problems += [f"{where}: ablation.grid: {k}: {p}" for k in flat if (p := _key_problem(k)) is not None]
    if problems:
        raise ConfigError(problems)
    for key, values in flat.items():
        for v in values:
            try:
                _override(key, v)
            except ValueError as exc:
                problems.append(f"{where}: ablation.grid.{key}: {exc}")
    names = _short_names(list(flat))
    entries = []
    for combo in itertools.product(*flat.values()):
        values = dict(zip(flat, combo))
        entries.append((None, values, {names[k]: v for k, v in values.items()}))
    return entries, list(flat)


def _cell_entries(ablation: Path, cells: Any, base: Path | None,
                  problems: list[str]) -> tuple[list[tuple[Path | None, dict, dict]], list[str]]:
    where = str(ablation)
    if not isinstance(cells, list) or not cells:
        problems.append(f"{where}: ablation.cells: expected a non-empty list of mappings (each: config overrides, and "
                        "optionally base and label)")
        raise ConfigError(problems)
    parsed = []
    for i, cell in enumerate(cells):
        at = f"{where}: ablation.cells[{i}]"
        if not isinstance(cell, dict):
            problems.append(f"{at}: expected a mapping of config overrides, got {cell!r}")
            continue
        cell = dict(cell)
        label = cell.pop("label", None)
        if label is not None and not isinstance(label, (str, int, float)):
            problems.append(f"{at}.label: expected a short text, got {label!r}")
        cell_base = base
        if "base" in cell:
            cell_base = _base_path(ablation, cell.pop("base"), f"ablation.cells[{i}].base", problems)
        elif base is None:
            problems.append(f"{at}: no base config: give ablation.base or this cell's own base")
        parsed.append((cell_base, label, _mapping(cell, at, problems)))
    if problems:
        raise ConfigError(problems)
    labels = [label for _, label, _ in parsed]
    if any(label is not None for label in labels) and (None in labels or len(set(map(str, labels))) != len(labels)):
        problems.append(f"{where}: ablation.cells: labels must be given for every cell and differ, got {labels!r}")
        raise ConfigError(problems)

    # varied: the keys whose values differ between cells (a key a cell leaves out keeps its base value)
    keys = list(dict.fromkeys(k for _, _, values in parsed for k in values))
    differ = [k for k in keys if len({json.dumps(values.get(k, BASE_VALUE), sort_keys=True)
                                      for _, _, values in parsed}) > 1]
    bases = [b for b, _, _ in parsed]
    base_names = _base_names(bases)
    names = _short_names(differ)
    entries = []
    for (cell_base, label, values), base_name in zip(parsed, base_names):
        varied: dict[str, Any] = {}
        if label is not None:
            varied["label"] = label
        if len(set(bases)) > 1:
            varied["base"] = base_name
        varied.update({names[k]: values.get(k, BASE_VALUE) for k in differ})
        entries.append((cell_base, values, varied))
    if len({json.dumps([str(b), v], sort_keys=True) for b, v, _ in entries}) != len(entries):
        problems.append(f"{where}: ablation.cells: two cells have the same base and overrides; remove the repeat "
                        "(use seeds: for repeated runs)")
        raise ConfigError(problems)
    return entries, differ


def _base_names(bases: list[Path | None]) -> list[str]:
    """Each base config's file name without .yaml (its path where two names collide)."""
    stems = [b.stem if b else "" for b in bases]
    return [s if len({b for b, t in zip(bases, stems) if t == s}) == 1 else str(b) for b, s in zip(bases, stems)]


def _short_names(keys: list[str]) -> dict[str, str]:
    """Table columns for dotted keys: the shortest suffix that tells the keys apart, with at least the
    slot for a plugin name (`compressor.name`, not `name`)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        n = 2 if parts[-1] == "name" and len(parts) > 1 else 1
        while n < len(parts) and any(o != key and o.split(".")[-n:] == parts[-n:] for o in keys):
            n += 1
        out[key] = ".".join(parts[-n:])
    return out


def _key_problem(key: str) -> str | None:
    """Why a dotted key cannot be a config key (section and first-level key only; plugin arguments and
    deeper keys are checked when each cell's config is validated), or None."""
    parts = key.split(".")
    if parts[0] == "trainer":
        return None if len(parts) >= 2 else "name a lightning.Trainer argument, e.g. trainer.max_epochs"
    if parts[0] not in SECTIONS:
        return f"not a config key: no section {parts[0]!r}.{suggest(parts[0], sorted([*SECTIONS, 'trainer']))}"
    fields = [f.name for f in dataclasses.fields(SECTIONS[parts[0]])]
    if len(parts) == 1:
        return f"name a key inside the section, e.g. {parts[0]}.{fields[0]}"
    if parts[1] not in fields:
        return f"not a config key: {parts[0]} has no key {parts[1]!r}.{suggest(parts[1], fields)}"
    return None


def _override(key: str, value: Any) -> str:
    """``key=value`` that `lrc fit` parses back to exactly ``value`` (plain words stay plain; other
    strings are quoted so that "16" stays a string; lists and mappings are written as JSON)."""
    texts = [value, json.dumps(value)] if isinstance(value, str) else [json.dumps(value)]
    for text in texts:
        out = f"{key}={text}"
        node: Any = parse_overrides([out])
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node == value and type(node) is type(value):
            return out
    raise ValueError(f"value {value!r} does not survive the command line (it reads back as {node!r}); "
                     "write it differently")


def _slug(varied: dict[str, Any]) -> str:
    def word(v: Any) -> str:
        return "base" if v == BASE_VALUE else v if isinstance(v, (str, int, float)) else json.dumps(v, sort_keys=True)

    text = "__".join(f"{k}-{word(v)}" for k, v in varied.items()) or "cell"
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "cell"
    if len(text) > 100:  # file names stay short; the hash keeps truncated ones apart
        text = text[:90] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return text


def _make_slugs_unique(cells: list[Cell]) -> None:
    """Values that differ only in characters a file name cannot hold (`a/b`, `a b`) get a hash of the
    cell's overrides appended, so every cell keeps its own folder, the same one on every run."""
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.slug] = counts.get(c.slug, 0) + 1
    for c in cells:
        if counts[c.slug] > 1:
            c.slug += "-" + hashlib.sha1(json.dumps([str(c.base), c.overrides]).encode()).hexdigest()[:8]


def validate_cells(plan: Plan) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each cell's resolved config, or why it does not validate. When no cell validates, the ablation
    itself is wrong (a misspelt plugin argument, a grid value no plugin takes): that is a ConfigError."""
    from lrc.registry import PluginError

    configs, errors = {}, {}
    for cell in plan.cells:
        try:
            configs[cell.slug] = validate(load_config(cell.base, cell.overrides))
        except (ConfigError, PluginError, FileNotFoundError) as exc:
            errors[cell.slug] = "; ".join(exc.problems) if isinstance(exc, ConfigError) else str(exc)
    if plan.cells and not configs:
        problems = list(dict.fromkeys(p for e in errors.values() for p in e.split("; ")))
        raise ConfigError([f"{plan.source}: no cell of the ablation has a valid config:"] + problems)
    return configs, errors


def plan_record(plan: Plan) -> dict[str, Any]:
    """The resolved plan as written to DIR/ablation.yaml."""
    return {"ablation": {"name": plan.name, "source": str(plan.source.resolve()), "description": plan.description,
                         "axes": plan.axes, "metrics": plan.metrics, "seeds": plan.seeds,
                         "command_line": plan.command_line},
            "cells": [{"slug": c.slug, "base": str(c.base), "overrides": c.overrides, "varied": c.varied,
                       "seed": c.seed} for c in plan.cells]}


def check_out_dir(plan: Plan, out: Path) -> None:
    """DIR/ablation.yaml holds the plan DIR's cells were run with: resuming into DIR needs the same cells
    (the same base files and overrides, so the same slugs); anything else goes to another folder."""
    from lrc.train.rundir import LOCK_NAME, RunDirError

    saved_path = out / "ablation.yaml"
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a folder; pick a folder that does not exist yet (or an empty one)")
    if saved_path.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_path))
        cells = [(c["slug"], c["base"], c["overrides"]) for c in saved.get("cells", [])]  # type: ignore[union-attr]
        if cells != [(c.slug, str(c.base), c.overrides) for c in plan.cells]:
            raise RunDirError(f"--out {out} holds the cells of a different plan ({saved_path}): re-run the exact "
                              "command that made it to resume it, or pick another --out for this one")
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunDirError(f"--out {out} exists, is not empty and is not an ablation's folder (it has no "
                          "ablation.yaml); pick another --out")


def write_plan(plan: Plan, out: Path) -> None:
    """DIR/ablation.yaml: the plan record, written whole (a crash leaves the old one or the new one)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "ablation.yaml.tmp"
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(plan_record(plan))))
    os.replace(tmp, out / "ablation.yaml")
