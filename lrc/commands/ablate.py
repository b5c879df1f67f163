"""``lrc ablate``: run a study, one ``lrc fit`` per cell, then tabulate and plot the results.

An ablation file (docs/ablations.md) names a base experiment and the cells to run:

    ablation:
      name: compressors
      base: study_base.yaml                   # an experiment config, relative to this file
      grid:                                   # cartesian product of override values
        model.compressor.name: [tome, pooling, qformer, mlp]
        model.compressor.tokens_per_frame: [16, 64]
      seeds: [0, 1]                           # optional: run.seed per cell; tables show mean ± std
      metrics: [val/mcq_acc]                  # optional: the table's and plots' metrics (default: val/*)
      overrides: {trainer.max_epochs: 3}      # optional: applied to every cell

or, instead of ``grid``, ``cells:``, a list of override mappings that may each name their own ``base``
and a ``label`` (paper Table 5, HiCo × TPO: four cells on four base configs).

Each cell's config is, from lowest to highest precedence: its base file(s), the ablation's
``overrides``, the cell's own values, ``run.seed`` from ``seeds``, the command line's ``key=value``.
Every cell is validated before anything runs. Each then runs as ``python -m lrc.cli fit`` in a child
process, so a crash or an out-of-memory kill ends that cell only and its peak memory is the child's
own (``os.wait4``). The output folder (``--out DIR``, default ``runs/ablations/NAME``):

    ablation.yaml     the resolved plan; re-running into DIR needs the same cells (it resumes)
    cells/SLUG/       log.txt (the fit's stdout and stderr), cell.json (status, exit code, error, each
                      attempt's command, wall time, peak RSS), run/ (the ``lrc fit`` run dir)
    results.csv       one row per cell and seed: varied values, status, cost, every metric
    results.md        the table to paste: main metrics as mean ± std over seeds, cost, failures
    plots/*.png       each main metric against the first varied axis, one series per other value

Re-running the same command skips finished cells (run/metrics.json), continues interrupted ones with
``lrc fit --resume`` and retries failed ones. Ctrl-C is passed on to the running cell, which saves a
checkpoint; ``lrc ablate`` then exits with 130 and the command that resumes it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from omegaconf import OmegaConf

from lrc.config import SECTIONS, ConfigError, leaf_keys, load_config, parse_overrides, validate
from lrc.ops import is_int
from lrc.registry import suggest

log = logging.getLogger("lrc")

ABLATION_KEYS = ("name", "description", "base", "grid", "cells", "seeds", "metrics", "overrides")
CELL_KEYS = ("base", "label")  # what a `cells:` entry may hold besides config keys
# results.csv columns read from each cell's metrics.json, by the key the fit wrote (lrc/train/run.py _cost_metrics)
COST_COLUMNS = {"train_time_s": "train/time_s", "peak_rss_mib": "sys/peak_rss_mib",
                "peak_cuda_mib": "sys/peak_cuda_mib", "visual_tokens_per_video": "model/visual_tokens_per_video"}
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


# ---------------------------------------------------------------------------------------------
# The plan: an ablation file expanded into cells
# ---------------------------------------------------------------------------------------------
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
                           f"seeds, metrics, overrides; docs/ablations.md).{hint}"])
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
    return Plan(name, path, str(description), cells, columns, metrics, seeds, command_line)


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
    from lrc.train.run import RunDirError

    saved_path = out / "ablation.yaml"
    if saved_path.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_path))
        cells = [(c["slug"], c["base"], c["overrides"]) for c in saved.get("cells", [])]  # type: ignore[union-attr]
        if cells != [(c.slug, str(c.base), c.overrides) for c in plan.cells]:
            raise RunDirError(f"--out {out} holds the cells of a different plan ({saved_path}): re-run the exact "
                              "command that made it to resume it, or pick another --out for this one")
    elif out.exists() and any(out.iterdir()):
        raise RunDirError(f"--out {out} exists, is not empty and is not an ablation's folder (it has no "
                          "ablation.yaml); pick another --out")


def _write_plan(plan: Plan, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "ablation.yaml.tmp"
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(plan_record(plan))))
    os.replace(tmp, out / "ablation.yaml")


# ---------------------------------------------------------------------------------------------
# Running the cells
# ---------------------------------------------------------------------------------------------
@dataclass
class CellResult:
    cell: Cell
    status: str  # done | failed | invalid | interrupted | not run | incomplete (its metrics.json went missing)
    seed: int | None = None
    exit_code: int | None = None
    error: str = ""
    wall_s: float | None = None  # summed over the attempts
    peak_rss_mib: float | None = None  # the OS's figure for the cell's process (os.wait4), max over attempts
    metrics: dict[str, Any] = field(default_factory=dict)


class _SignalForwarder:
    """Ctrl-C and SIGTERM reach `lrc ablate` only (each cell runs in its own session, away from the
    terminal's process group) and are passed on to the running cell once per signal: the first makes
    it save a checkpoint and stop, a second stops it at once, exactly as for `lrc fit` itself."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.signum: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        if self.pid is not None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass
        else:
            log.warning("%s received: stopping before the next cell", signal.Signals(signum).name)


def _run_cell(cell: Cell, cell_dir: Path, forward: _SignalForwarder, verbose: bool) -> float:
    """One attempt at a cell's fit, in a child process: resumed from its last checkpoint when a previous
    attempt left one, else from scratch (a run dir that saved nothing is moved aside). Its outcome is
    added to cell.json; returns its wall time in seconds."""
    from lrc.memory import max_rss_kib
    from lrc.files import write_json

    run_dir = cell_dir / "run"
    lrc = [sys.executable, "-m", "lrc.cli", "fit"]
    if (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "config.yaml").is_file():
        command = [*lrc, "--resume", str(run_dir)]
    else:
        if run_dir.exists():  # it stopped before its first checkpoint: nothing to continue
            n = 1 + sum(1 for _ in cell_dir.glob("run.abandoned-*"))
            run_dir.rename(cell_dir / f"run.abandoned-{n}")
        command = [*lrc, str(cell.base), "--out", str(run_dir), *cell.overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # log.txt fills as the fit runs
    with open(cell_dir / "log.txt", "a", encoding="utf-8", errors="replace") as logfile:
        logfile.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {shlex.join(command)}\n")
        logfile.flush()
        start, started = logfile.tell(), datetime.now().isoformat(timespec="seconds")
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE if verbose else logfile, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                text=True, errors="replace")
        forward.pid = proc.pid
        try:
            if verbose:
                assert proc.stdout is not None
                for line in proc.stdout:
                    logfile.write(line)
                    sys.stdout.write(line)
                    sys.stdout.flush()
            # wait4, not Popen.wait: it also returns the child's own resource usage (its peak RSS)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            forward.pid = None
    wall = time.perf_counter() - t0
    text = (cell_dir / "log.txt").read_bytes()[start:].decode("utf-8", errors="replace")
    rss_kib = max_rss_kib(usage)
    finished = proc.returncode == 0 and (run_dir / "metrics.json").is_file()
    error = ("" if finished else last_error(text, proc.returncode) if proc.returncode
             else "exited with 0 but wrote no metrics.json")
    attempt = {"command": shlex.join(command), "started": started, "exit_code": proc.returncode,
               "wall_s": round(wall, 1), "peak_rss_mib": round(rss_kib / 1024, 1), "error": error}
    record = _read_json(cell_dir / "cell.json")
    write_json(cell_dir / "cell.json", {
        "slug": cell.slug, "status": "done" if finished else "interrupted" if forward.signum else "failed",
        "exit_code": proc.returncode, "error": error, "attempts": record.get("attempts", []) + [attempt]})
    return wall


def last_error(log_text: str, exit_code: int) -> str:
    """The line of a failed fit's output that says what went wrong: lrc's own `error:` message (with the
    problems listed under it), else the last line of a traceback, else the last line."""
    if exit_code < 0:
        name = signal.Signals(-exit_code).name
        why = " (out of memory? the kernel's OOM killer sends SIGKILL)" if exit_code == -signal.SIGKILL else ""
        return f"killed by {name}{why}"
    # progress bars (tqdm's "it/s]", rich's bars) say nothing about what went wrong
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip() and not re.search(r"it/s\]|━", line)]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(("error:", "interrupted:")):
            details = list(itertools.takewhile(lambda l: l.startswith(" "), lines[i + 1:]))
            return " ".join([lines[i], *(d.strip() for d in details)])
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line):
            return line
    return lines[-1] if lines else f"exit code {exit_code} (no output)"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _result_of(cell: Cell, cell_dir: Path, seed: int | None) -> CellResult:
    """A cell's result as its folder records it (cell.json, run/metrics.json)."""
    record = _read_json(cell_dir / "cell.json")
    attempts = record.get("attempts", [])
    metrics = _read_json(cell_dir / "run" / "metrics.json")
    status = "done" if metrics else record.get("status", "not run").replace("done", "incomplete")
    walls = [a["wall_s"] for a in attempts if a.get("wall_s") is not None]
    peaks = [a["peak_rss_mib"] for a in attempts if a.get("peak_rss_mib") is not None]
    return CellResult(cell, status, seed, record.get("exit_code"), "" if metrics else record.get("error", ""),
                      sum(walls) if walls else None, max(peaks) if peaks else None, metrics)


def ablate(path: str | Path, out: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
           verbose: bool = False, dry_run: bool = False, echo: Callable[[str], None] = print) -> int:
    """``lrc ablate``: 0 when every cell finished, 1 when any failed, 128 + the signal when interrupted."""
    from lrc.train.interrupt import handling_stop_signals

    plan = load_plan(path, overrides)
    out_dir = Path(out) if out is not None else Path("runs") / "ablations" / plan.name
    if not dry_run:
        check_out_dir(plan, out_dir)
    configs, invalid = validate_cells(plan)
    seeds = {c.slug: c.seed if c.seed is not None else configs.get(c.slug, {}).get("run", {}).get("seed")
             for c in plan.cells}
    if dry_run:
        for i, c in enumerate(plan.cells, 1):
            state = f"INVALID: {invalid[c.slug]}" if c.slug in invalid else "valid"
            echo(f"[{i}/{len(plan.cells)}] {c.slug}: {state}\n    lrc fit {c.base} {shlex.join(c.overrides)}")
        return 1 if invalid else 0
    _write_plan(plan, out_dir)
    results = {c.slug: _result_of(c, out_dir / "cells" / c.slug, seeds[c.slug]) for c in plan.cells}
    for slug, error in invalid.items():
        results[slug] = dataclasses.replace(results[slug], status="invalid", error=f"invalid config: {error}",
                                            exit_code=None, metrics={})
    todo = [c for c in plan.cells if results[c.slug].status not in ("done", "invalid")]
    done = len(plan.cells) - len(todo) - len(invalid)
    echo(f"ablation {plan.name}: {len(plan.cells)} cell{'s' * (len(plan.cells) != 1)} ({done} already done, "
         f"{len(invalid)} invalid, {len(todo)} to run) -> {out_dir}")
    _prepare_corpora([configs[c.slug] for c in todo], echo)

    forward = _SignalForwarder()
    walls: list[float] = []
    t_start = time.perf_counter()
    with handling_stop_signals(forward.handle):
        for n, cell in enumerate(todo, 1):
            if forward.signum is not None:
                break
            cell_dir = out_dir / "cells" / cell.slug
            cell_dir.mkdir(parents=True, exist_ok=True)
            tag = (f"[{plan.cells.index(cell) + 1}/{len(plan.cells)}] "
                   f"{describe(cell.varied, cell.seed if plan.seeds and len(plan.seeds) > 1 else None)} ...")
            resuming = (cell_dir / "run" / "checkpoints" / "last.ckpt").is_file()
            echo(f"{tag} {'resuming' if resuming else 'running'} (log: {cell_dir / 'log.txt'})")
            wall = _run_cell(cell, cell_dir, forward, verbose)
            result = results[cell.slug] = _result_of(cell, cell_dir, seeds[cell.slug])
            walls.append(wall)
            left = len(todo) - n
            eta = f"; about {_duration(left * sum(walls) / len(walls))} left" if left and not forward.signum else ""
            if result.status == "done":
                main = (plan.metrics or ["val/mcq_acc"])[0]
                value = result.metrics.get(main)
                score = f", {main} {value:.3f}" if isinstance(value, (int, float)) else ""
                echo(f"{tag} done in {_duration(wall)}{score}{eta}")
            else:
                echo(f"{tag} {result.status.upper()} (exit code {result.exit_code}) after {_duration(wall)}: "
                     f"{result.error}{eta}")

    ordered = [results[c.slug] for c in plan.cells]
    paths = write_results(plan, ordered, out_dir, time.perf_counter() - t_start)
    echo("\n" + table_markdown(plan, ordered))
    echo("\n" + "\n".join(f"{label}: {p}" for label, p in paths))
    resume_with = shlex.join(["lrc", "ablate", str(plan.source), "--out", str(out_dir), *plan.command_line])
    if forward.signum is not None:
        echo(f"\ninterrupted ({signal.Signals(forward.signum).name}): finished cells are kept, the running one saved a "
             f"checkpoint if it was training. Resume with: {resume_with}")
        return 128 + forward.signum
    failed = [r for r in ordered if r.status != "done"]
    if failed:
        echo(f"\n{len(failed)} of {len(ordered)} cells did not finish:")
        for r in failed:
            echo(f"  {r.cell.slug}: {r.status}: {r.error}   (log: {out_dir / 'cells' / r.cell.slug / 'log.txt'})")
        echo(f"Re-running `{resume_with}` retries them and skips the finished ones.")
        return 1
    return 0


def _prepare_corpora(configs: list[dict[str, Any]], echo: Callable[[str], None]) -> None:
    """Synthesise each missing corpus once, here, rather than inside the first cell that needs it, so
    that the cells' wall times compare like with like (the first cell's seed makes the corpus)."""
    from lrc.train.run import ensure_corpus

    seen = set()
    for cfg in configs:
        root = Path(cfg["data"]["root"]).resolve()
        if root in seen:
            continue
        seen.add(root)
        if not (root / cfg["data"]["train"]).exists():
            echo(f"synthesising the corpus {cfg['data']['root']} ({cfg['data'].get('synth_videos')} videos) ...")
        t0 = time.perf_counter()
        try:
            ensure_corpus(cfg)
        except FileNotFoundError as exc:  # the cells on this corpus fail, each with this message in its log
            echo(f"warning: {exc}")
            continue
        if time.perf_counter() - t0 > 1:
            echo(f"corpus ready in {_duration(time.perf_counter() - t0)}")


def describe(varied: dict[str, Any], seed: int | None = None) -> str:
    text = " ".join(f"{k}={_text(v)}" for k, v in varied.items())
    return text + (f" seed={seed}" if seed is not None else "")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------------
# Results: CSV, Markdown, plots
# ---------------------------------------------------------------------------------------------
def main_metrics(plan: Plan, results: list[CellResult]) -> list[str]:
    if plan.metrics:
        return plan.metrics
    found = {k for r in results for k, v in r.metrics.items() if k.startswith("val/") and isinstance(v, (int, float))}
    return sorted(found, key=lambda k: (k != "val/mcq_acc", k))


def write_results(plan: Plan, results: list[CellResult], out: Path, wall_s: float) -> list[tuple[str, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "results.md"
    cost_keys = set(COST_COLUMNS.values())
    metric_keys = sorted({k for r in results for k in r.metrics if k not in cost_keys})
    header = ["cell", *plan.axes, "seed", "status", "exit_code", "wall_time_s", *COST_COLUMNS, *metric_keys, "error"]
    with open(csv_path.with_suffix(".csv.tmp"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in results:
            cost = {col: r.metrics.get(key, "") for col, key in COST_COLUMNS.items()}
            if cost["peak_rss_mib"] == "" and r.peak_rss_mib is not None:  # a failed cell: the OS's figure
                cost["peak_rss_mib"] = r.peak_rss_mib
            writer.writerow([r.cell.slug, *(_text(r.cell.varied[a]) for a in plan.axes),
                             "" if r.seed is None else r.seed, r.status, "" if r.exit_code is None else r.exit_code,
                             "" if r.wall_s is None else r.wall_s, *cost.values(),
                             *(r.metrics.get(k, "") for k in metric_keys), r.error])
    os.replace(csv_path.with_suffix(".csv.tmp"), csv_path)
    md_path.write_text(_markdown_header(plan, results, wall_s) + table_markdown(plan, results) + "\n")
    plots = plot_results(plan, results, out / "plots")
    return [("table", md_path), ("csv", csv_path)] + [("plot", p) for p in plots]


def _markdown_header(plan: Plan, results: list[CellResult], wall_s: float) -> str:
    import torch

    device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU only"
    bases = sorted({_relative(r.cell.base) for r in results})
    done = sum(r.status == "done" for r in results)
    lines = [f"# Ablation `{plan.name}`", ""]
    if plan.description:
        lines += [plan.description.strip(), ""]
    lines += [f"- ablation file: `{_relative(plan.source)}`; base config: {', '.join(f'`{b}`' for b in bases)}",
              f"- command line: `{shlex.join(plan.command_line)}`" if plan.command_line else "- command line: (none)",
              f"- {len(results)} runs ({len(plan.seeds or [None])} seed(s) per cell), {done} finished; this "
              f"invocation took {_duration(wall_s)}",
              f"- {datetime.now().isoformat(timespec='minutes')}; machine: {os.cpu_count()} CPUs, torch "
              f"{torch.__version__}, {device}",
              "- metrics are on the validation split; `± std` over seeds where there are several; peak RSS is the "
              "fit process's (docs/ablations.md)", "", ""]
    return "\n".join(lines)


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _groups(axes: list[str], results: list[CellResult]) -> dict[tuple, list[CellResult]]:
    """Results by their values of `axes` (the seeds of one cell together), in plan order."""
    groups: dict[tuple, list[CellResult]] = {}
    for r in results:
        groups.setdefault(tuple(_text(r.cell.varied[a]) for a in axes), []).append(r)
    return groups


def _series_axes(plan: Plan, results: list[CellResult]) -> list[str]:
    """The varied axes after the first that tell the plots' series apart: an axis whose value follows
    from the x value (a cell's `base` next to its `label`) would only split one bar per x into two."""
    x_axis, others = plan.axes[0], plan.axes[1:]
    return [a for a in others
            if any(len({_text(r.cell.varied[a]) for r in results if _text(r.cell.varied[x_axis]) == x}) > 1
                   for x in {_text(r.cell.varied[x_axis]) for r in results})]


def _stats(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def table_markdown(plan: Plan, results: list[CellResult]) -> str:
    metrics = main_metrics(plan, results)
    has_cuda = any("sys/peak_cuda_mib" in r.metrics for r in results)
    columns = [*plan.axes, *metrics, "train s", "peak RSS MiB", *(["peak CUDA MiB"] if has_cuda else []),
               "visual tokens / video", "status"]
    rows = []
    for values, group in _groups(plan.axes, results).items():
        done = [r for r in group if r.status == "done"]

        def cell(key: str, fmt: str, how: str = "mean") -> str:
            found = [float(r.metrics[key]) for r in done if isinstance(r.metrics.get(key), (int, float))]
            if not found:
                return "—"
            if how == "max":
                return format(max(found), fmt)
            mean, std = _stats(found)
            text = format(mean, fmt) + (f" ± {format(std, fmt)}" if len(group) > 1 else "")
            return text + (f" ({len(found)}/{len(group)})" if len(found) < len(group) else "")

        peak = cell("sys/peak_rss_mib", ".0f", "max")
        if peak == "—":  # no finished seed: what the OS measured for the failed process
            peaks = [r.peak_rss_mib for r in group if r.peak_rss_mib is not None]
            peak = f"{max(peaks):.0f}" if peaks else "—"
        failed = [r for r in group if r.status != "done"]
        status = "ok" if not failed else "; ".join(
            f"{r.status}" + (f" (exit {r.exit_code})" if r.exit_code not in (None, 0) else "") +
            (f": {_short(r.error)}" if r.error else "") for r in failed[:2])
        rows.append([*values, *(cell(m, ".3f") for m in metrics), cell("train/time_s", ".0f"), peak,
                     *([cell("sys/peak_cuda_mib", ".0f", "max")] if has_cuda else []),
                     cell("model/visual_tokens_per_video", ".0f"), status])
    numeric = {i for i in range(len(plan.axes), len(columns) - 1)}
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if i in numeric else "---" for i in range(len(columns))) + " |"]
    lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _why_no_value(group: list[CellResult]) -> str:
    """What a plot says where a cell has no value for a metric: it failed, or it finished without that
    metric (a TPO head's metric in a cell without the head)."""
    return "failed" if any(r.status != "done" for r in group) else "no such metric"


def plot_results(plan: Plan, results: list[CellResult], folder: Path) -> list[Path]:
    """One PNG per main metric: the metric against the first varied axis, one series per combination
    of the other axes; bars for categorical values, lines for numbers; error bars = std over seeds."""
    if not plan.axes or not any(r.status == "done" for r in results):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    series_axes = _series_axes(plan, results)
    groups = _groups([plan.axes[0], *series_axes], results)
    xs = list(dict.fromkeys(values[0] for values in groups))
    series = list(dict.fromkeys(values[1:] for values in groups))
    raw_x = {_text(r.cell.varied[plan.axes[0]]): r.cell.varied[plan.axes[0]] for r in results}
    numeric = all(isinstance(raw_x[x], (int, float)) and not isinstance(raw_x[x], bool) for x in xs)
    seeded = any(len(g) > 1 for g in groups.values())
    paths = []
    for metric in main_metrics(plan, results):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        width = 0.8 / len(series)
        for i, rest in enumerate(series):
            means, stds = [], []
            for x in xs:
                found = [float(r.metrics[metric]) for r in groups.get((x, *rest), [])
                         if r.status == "done" and isinstance(r.metrics.get(metric), (int, float))]
                mean, std = _stats(found) if found else (math.nan, 0.0)
                means.append(mean)
                stds.append(std)
            label = ", ".join(f"{a}={v}" for a, v in zip(series_axes, rest)) or None
            yerr = stds if seeded else None
            if numeric:
                positions = [raw_x[x] for x in xs]
                ax.errorbar(positions, means, yerr=yerr, marker="o", capsize=3, label=label)
            else:
                positions = [j + (i - (len(series) - 1) / 2) * width for j in range(len(xs))]
                ax.bar(positions, means, width, yerr=yerr, capsize=3, label=label)
            for pos, mean, x in zip(positions, means, xs):  # a cell without a value: say why where it would be
                if math.isnan(mean) and (x, *rest) in groups:
                    why = _why_no_value(groups[(x, *rest)])
                    ax.annotate(why, (pos, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                                textcoords="offset points", ha="center", rotation=90, fontsize="small",
                                color="red" if why == "failed" else "grey")
        if numeric:
            values = [raw_x[x] for x in xs]
            if min(values) > 0 and max(values) / min(values) >= 8:  # 4, 16, 64 tokens per frame: even steps
                ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
        else:
            ax.set_xticks(range(len(xs)), xs)
            ax.set_xlim(-0.5, len(xs) - 0.5)  # a category without a bar keeps its place
        ax.set_xlabel(plan.axes[0])
        ax.set_ylabel(metric)
        ax.set_title(f"{plan.name}: {metric}")
        if len(series) > 1:
            ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", metric) + ".png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
