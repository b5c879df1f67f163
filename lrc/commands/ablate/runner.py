"""Running an ablation: ``ablate()``, the entry of ``lrc ablate``, and each cell as an ``lrc fit`` child.

Each cell runs as ``python -m lrc.cli fit`` in a child process of its own session, so a crash or an
out-of-memory kill ends that cell only and its peak memory is the child's own (``os.wait4``); ``--jobs N``
keeps N of them going at once, each with its share of the CPUs, and ``--executor slurm`` runs each as a
cluster job through submitit instead (executors.py). While cells run, progress lines say how far each is
and about how long the study has left (progress.py). Its
folder DIR/cells/SLUG holds log.txt (the fit's stdout and stderr), cell.json (status, exit code,
error, each attempt's command, wall time, peak RSS) and run/ (the ``lrc fit`` run dir). Each attempt
is ``lrc fit BASE --out RUN --resume-if-exists OVERRIDES``, so re-running the same command skips finished
cells (run/metrics.json), continues interrupted ones from their newest good checkpoint (a damaged or partial
one gives way to the one before, or to a fresh start: never to a cell that fails on every re-run) and retries
failed ones. ``lrc ablate`` holds the lock of its output folder (lrc/train/rundir.py) while it runs, and
each cell's fit holds its run folder's. Ctrl-C and SIGTERM are passed on to the running cells,
which save a checkpoint; ``lrc ablate`` then exits with 128 + the signal and the command that resumes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
import shlex
import signal
import time
from pathlib import Path
from typing import Any, Callable

from lrc.commands.ablate.executors import (EXECUTORS, SUBMITIT_EXECUTORS, Attempt, Outcome, SubmititLauncher,
                                           SubprocessLauncher, check_jobs, check_settings)
from lrc.commands.ablate.plan import Cell, check_out_dir, load_plan, validate_cells, write_plan
from lrc.commands.ablate.progress import Progress, RunningCell
from lrc.commands.ablate.report import CellResult, describe, duration, table_markdown, write_results
from lrc.errors import ConfigError

log = logging.getLogger("lrc")


def ablate(path: str | Path, out: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
           verbose: bool = False, dry_run: bool = False, echo: Callable[[str], None] = print, jobs: int | None = None,
           executor: str = "subprocess", progress_every: float = 30.0) -> int:
    """``lrc ablate``: 0 when every cell finished, 1 when any failed, 128 + the signal when interrupted.

    ``jobs``: cells at once (default 1 as child processes, every cell at once as cluster jobs); ``executor``:
    ``subprocess`` (child processes of this one), ``slurm`` or ``local`` (submitit; executors.py);
    ``progress_every``: seconds between progress lines while cells run (0: only when a cell starts or ends)."""
    check_jobs(jobs)
    if executor not in EXECUTORS:
        raise ConfigError([f"command line: --executor {executor}: one of {', '.join(EXECUTORS)}"])
    plan = load_plan(path, overrides)
    if executor in SUBMITIT_EXECUTORS:
        problems = check_settings(executor, plan.executor.get(executor), str(plan.source))
        if problems:
            raise ConfigError(problems)
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
        if executor in SUBMITIT_EXECUTORS:
            launcher: Any = SubmititLauncher(executor, out_dir / "submitit", plan.executor.get(executor) or {},
                                             plan.name, jobs)
        else:
            launcher = SubprocessLauncher(jobs or 1, verbose)
        return _run_plan(plan, out_dir, configs, invalid, seeds, launcher, echo, progress_every)


def _run_plan(plan: Any, out_dir: Path, configs: dict[str, Any], invalid: dict[str, str], seeds: dict[str, Any],
              launcher: Any, echo: Callable[[str], None], progress_every: float) -> int:
    """The cells of a checked plan, run into ``out_dir`` (which this process holds), ``launcher.jobs`` at a time
    (None: all at once), then the results."""
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
    slots = launcher.jobs or max(1, len(todo))
    launcher.share(min(slots, max(1, len(todo))))
    if todo and (slots > 1 or launcher.name != "subprocess"):
        threads = f", {launcher.threads} thread{'s' * (launcher.threads != 1)} each" if launcher.threads else ""
        where = "as child processes" if launcher.name == "subprocess" else f"as {launcher.name} jobs (submitit)"
        echo(f"running up to {min(slots, len(todo))} cells at a time {where}{threads}")
    _prepare_corpora([configs[c.slug] for c in todo], echo)

    forward = _SignalForwarder()
    progress = Progress(done + len(todo), done, slots, echo, progress_every)
    queue = list(todo)
    running: dict[str, tuple[Cell, Attempt]] = {}
    t_start = time.perf_counter()
    with handling_stop_signals(forward.handle):
        try:
            while queue or running:
                while queue and len(running) < slots and forward.signum is None:
                    cell = queue.pop(0)
                    cell_dir = out_dir / "cells" / cell.slug
                    resuming = any((cell_dir / "run" / "checkpoints").glob("*.ckpt"))
                    attempt = _start(cell, cell_dir, launcher, configs[cell.slug])
                    running[cell.slug] = (cell, attempt)
                    forward.attempts[cell.slug] = attempt
                    progress.started(cell.slug, RunningCell(_label(plan, cell), cell_dir / "run"))
                    progress.waiting = len(queue)
                    echo(f"{_tag(plan, cell)} {'resuming' if resuming else 'running'} (log: {cell_dir / 'log.txt'})")
                    progress.printed()
                if forward.signum is not None:
                    progress.waiting = 0
                for slug, (cell, attempt) in list(running.items()):
                    outcome = attempt.poll()
                    if outcome is None:
                        progress.running[slug].where = attempt.describe()
                        continue
                    del running[slug]
                    forward.attempts.pop(slug, None)
                    cell_dir = out_dir / "cells" / slug
                    _record(cell, cell_dir, attempt, outcome, launcher, forward.signum)
                    result = results[slug] = _result_of(cell, cell_dir, seeds[slug])
                    progress.ended(slug, outcome.wall_s, result.status == "done", result.metrics.get("train/time_s"))
                    left = "" if forward.signum or not (queue or running) else progress.left_text()
                    echo(_ended_line(plan, cell, result, outcome.wall_s, left))
                    progress.printed()
                if forward.signum is not None and not running:
                    break
                progress.tick()
                if running:
                    time.sleep(POLL_S)
        except BaseException:
            for _, attempt in running.values():  # a bug, or an exception while waiting: leave no cell behind
                attempt.kill()
            raise

    ordered = [results[c.slug] for c in plan.cells]
    paths = write_results(plan, ordered, out_dir, time.perf_counter() - t_start)
    echo("\n" + table_markdown(plan, ordered))
    echo("\n" + "\n".join(f"{label}: {p}" for label, p in paths))
    resume_with = shlex.join(["lrc", "ablate", str(plan.source), "--out", str(out_dir), *plan.command_line])
    if forward.signum is not None:
        echo(f"\ninterrupted ({signal.Signals(forward.signum).name}): finished cells are kept, the running ones saved "
             f"a checkpoint if they were training. Resume with: {resume_with}")
        return 128 + forward.signum
    failed = [r for r in ordered if r.status != "done"]
    if failed:
        echo(f"\n{len(failed)} of {len(ordered)} cells did not finish:")
        for r in failed:
            echo(f"  {r.cell.slug}: {r.status}: {r.error}   (log: {out_dir / 'cells' / r.cell.slug / 'log.txt'})")
        echo(f"Re-running `{resume_with}` retries them and skips the finished ones.")
        return 1
    return 0


POLL_S = 0.5  # how often the running cells are looked at


def _label(plan: Any, cell: Cell) -> str:
    return describe(cell.varied, cell.seed if plan.seeds and len(plan.seeds) > 1 else None)


def _tag(plan: Any, cell: Cell) -> str:
    return f"[{plan.cells.index(cell) + 1}/{len(plan.cells)}] {_label(plan, cell)} ..."


def _ended_line(plan: Any, cell: Cell, result: CellResult, wall: float, left: str) -> str:
    eta = f"; {left}" if left else ""
    if result.status == "done":
        main = (plan.metrics or ["val/mcq_acc"])[0]
        value = result.metrics.get(main)
        score = f", {main} {value:.3f}" if isinstance(value, (int, float)) else ""
        return f"{_tag(plan, cell)} done in {duration(wall)}{score}{eta}"
    code = f" (exit code {result.exit_code})" if result.exit_code is not None else ""
    return f"{_tag(plan, cell)} {result.status.upper()}{code} after {duration(wall)}: {result.error}{eta}"


def _thread_overrides(cfg: dict[str, Any], threads: int | None) -> list[str]:
    """``run.threads=N`` for a cell sharing the machine, unless its config chose a number itself (the variables
    of executors.thread_env say it too, for the libraries that read only those). Not part of the plan: the
    same cells may run with any --jobs (run.threads may change on resume)."""
    from lrc.config.schema import RunConfig

    if threads is None:
        return []
    default = RunConfig().threads
    return [f"run.threads={threads}"] if cfg.get("run", {}).get("threads", default) == default else []


def _start(cell: Cell, cell_dir: Path, launcher: Any, cfg: dict[str, Any]) -> Attempt:
    """One attempt at a cell's fit: ``lrc fit ... --resume-if-exists`` resumes from the newest good checkpoint a
    previous attempt left, else starts (over) from scratch (what an attempt that saved nothing left is kept in
    run/abandoned-N/)."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    args = ["fit", str(cell.base), "--out", str(cell_dir / "run"), "--resume-if-exists", *cell.overrides,
            *_thread_overrides(cfg, launcher.threads)]
    return launcher.start(cell.slug, args, cell_dir / "log.txt")


def _record(cell: Cell, cell_dir: Path, attempt: Attempt, outcome: Outcome, launcher: Any,
            signum: int | None) -> None:
    """The attempt's outcome, added to cell.json."""
    from lrc.files import write_json

    run_dir = cell_dir / "run"
    text = (cell_dir / "log.txt").read_bytes()[attempt.offset:].decode("utf-8", errors="replace")
    code = outcome.exit_code
    finished = code == 0 and (run_dir / "metrics.json").is_file()
    error = ("" if finished else outcome.error if code is None else last_error(text, code) if code
             else "exited with 0 but wrote no metrics.json")
    entry = {"command": attempt.command, "started": attempt.started, "exit_code": code,
             "wall_s": round(outcome.wall_s, 1), "peak_rss_mib": outcome.peak_rss_mib, "error": error}
    if launcher.threads:
        entry["threads"] = launcher.threads
    if launcher.name != "subprocess":
        entry.update(executor=launcher.name, job_id=outcome.job_id)
    record = _read_json(cell_dir / "cell.json")
    write_json(cell_dir / "cell.json", {
        "slug": cell.slug, "status": "done" if finished else "interrupted" if signum else "failed",
        "exit_code": code, "error": error, "attempts": record.get("attempts", []) + [entry]})


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
    terminal's process group) and are passed on to the running cells once per signal: the first makes
    each save a checkpoint and stop, a second stops them at once, exactly as for `lrc fit` itself. No new
    cell starts after the first. Cluster jobs are cancelled (scancel: SIGTERM, so they save too)."""

    def __init__(self) -> None:
        self.attempts: dict[str, Attempt] = {}
        self.signum: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or signum
        if not self.attempts:
            log.warning("%s received: stopping before the next cell", signal.Signals(signum).name)
        for attempt in list(self.attempts.values()):
            attempt.signal(signum)


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
