"""Running an ablation: ``ablate()``, the entry of ``lrc ablate``, and each cell as an ``lrc fit`` child.

Each cell runs as ``python -m lrc.cli fit`` in a child process of its own session, so a crash or an
out-of-memory kill ends that cell only and its peak memory is the child's own (``os.wait4``). Its
folder DIR/cells/SLUG holds log.txt (the fit's stdout and stderr), cell.json (status, exit code,
error, each attempt's command, wall time, peak RSS) and run/ (the ``lrc fit`` run dir). Each attempt
is ``lrc fit BASE --out RUN --resume-if-exists OVERRIDES``, so re-running the same command skips finished
cells (run/metrics.json), continues interrupted ones from their newest good checkpoint (a damaged or partial
one gives way to the one before, or to a fresh start: never to a cell that fails on every re-run) and retries
failed ones. ``lrc ablate`` holds the lock of its output folder (lrc/train/rundir.py) while it runs, and
each cell's fit holds its run folder's. Ctrl-C and SIGTERM are passed on to the running cell,
which saves a checkpoint; ``lrc ablate`` then exits with 128 + the signal and the command that resumes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from lrc.commands.ablate.plan import Cell, check_out_dir, load_plan, validate_cells, write_plan
from lrc.commands.ablate.report import CellResult, describe, duration, table_markdown, write_results

log = logging.getLogger("lrc")


def ablate(path: str | Path, out: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
           verbose: bool = False, dry_run: bool = False, echo: Callable[[str], None] = print) -> int:
    """``lrc ablate``: 0 when every cell finished, 1 when any failed, 128 + the signal when interrupted."""
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
    from lrc.train.rundir import RunDirLock

    out_dir.mkdir(parents=True, exist_ok=True)
    with RunDirLock(out_dir):
        return _run_plan(plan, out_dir, configs, invalid, seeds, verbose, echo)


def _run_plan(plan: Any, out_dir: Path, configs: dict[str, Any], invalid: dict[str, str], seeds: dict[str, Any],
              verbose: bool, echo: Callable[[str], None]) -> int:
    """The cells of a checked plan, run into ``out_dir`` (which this process holds), then the results."""
    from lrc.train.interrupt import handling_stop_signals

    write_plan(plan, out_dir)
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
            resuming = any((cell_dir / "run" / "checkpoints").glob("*.ckpt"))
            echo(f"{tag} {'resuming' if resuming else 'running'} (log: {cell_dir / 'log.txt'})")
            wall = _run_cell(cell, cell_dir, forward, verbose)
            result = results[cell.slug] = _result_of(cell, cell_dir, seeds[cell.slug])
            walls.append(wall)
            left = len(todo) - n
            eta = f"; about {duration(left * sum(walls) / len(walls))} left" if left and not forward.signum else ""
            if result.status == "done":
                main = (plan.metrics or ["val/mcq_acc"])[0]
                value = result.metrics.get(main)
                score = f", {main} {value:.3f}" if isinstance(value, (int, float)) else ""
                echo(f"{tag} done in {duration(wall)}{score}{eta}")
            else:
                echo(f"{tag} {result.status.upper()} (exit code {result.exit_code}) after {duration(wall)}: "
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
            echo(f"corpus ready in {duration(time.perf_counter() - t0)}")


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
    """One attempt at a cell's fit, in a child process: ``lrc fit ... --resume-if-exists`` resumes from the
    newest good checkpoint a previous attempt left, else starts (over) from scratch (what an attempt that
    saved nothing left is kept in run/abandoned-N/). Its outcome is added to cell.json; returns its wall time."""
    from lrc.memory import max_rss_kib
    from lrc.files import write_json

    run_dir = cell_dir / "run"
    command = [sys.executable, "-m", "lrc.cli", "fit", str(cell.base), "--out", str(run_dir), "--resume-if-exists",
               *cell.overrides]
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
