"""How far a study is, and about when it ends: the progress lines of ``lrc ablate`` (docs/ablations.md).

The estimate of the time left adds up, for each cell still to finish, what it should still take, and shares
that out over the cells that run at once:

* a running cell whose fit reports its progress (RUN_DIR/progress.json, lrc/train/progress.py: optimizer
  step of total steps, and the time its steps took) still needs its remaining steps at its own rate, plus
  its final validation, counted as the share of a finished cell's wall time that was not training;
* a cell that waits, or a running one that has not reported yet, takes as long as the cells that finished in
  this invocation did (their mean wall time); before any finished, as long as the running ones project.

It is an estimate, printed as "about": cells differ (a Q-Former cell is slower than a pooling one), and
shares of a machine's CPUs are not independent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lrc.commands.ablate.report import duration


@dataclass
class RunningCell:
    label: str  # the cell's varied values, as the progress lines show them
    run_dir: Path
    t0: float = field(default_factory=time.perf_counter)
    where: str = ""  # "queued" while a cluster job waits for a node

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def read(self) -> dict[str, Any]:
        """The fit's progress.json, or {} while it has not written one (setting up, or queued)."""
        try:
            return json.loads((self.run_dir / "progress.json").read_text())
        except (OSError, ValueError):
            return {}


def _train_left(p: dict[str, Any]) -> float | None:
    """Seconds of training left, from the fit's own rate (None before its first timed step)."""
    step, total, first, spent = p.get("step"), p.get("total_steps"), p.get("first_step", 0), p.get("train_elapsed_s")
    if not all(isinstance(v, (int, float)) for v in (step, total, first, spent)) or step <= first or spent <= 0:
        return None
    if p.get("stage") == "trained":
        return 0.0
    return max(0.0, (total - step) * spent / (step - first))


class Progress:
    """The state of a study's invocation: cells finished, running and waiting; prints the progress lines."""

    def __init__(self, total: int, done: int, slots: int | None, echo: Callable[[str], None], every_s: float):
        self.total, self.done, self.slots, self.echo, self.every_s = total, done, slots, echo, every_s
        self.t0 = time.perf_counter()
        self.walls: list[float] = []  # wall times of the cells that finished in this invocation
        self.overheads: list[float] = []  # the share of each finished cell's wall time outside training
        self.running: dict[str, RunningCell] = {}
        self.waiting = 0
        self._last_line = time.perf_counter()

    def started(self, slug: str, cell: RunningCell) -> None:
        self.running[slug] = cell

    def ended(self, slug: str, wall: float, finished: bool, train_s: float | None) -> None:
        self.running.pop(slug, None)
        if finished:
            self.done += 1
            self.walls.append(wall)
            if isinstance(train_s, (int, float)) and 0 < train_s <= wall:
                self.overheads.append(1 - train_s / wall)

    def _per_cell(self) -> float | None:
        """What a cell takes, as far as this invocation knows."""
        if self.walls:
            return sum(self.walls) / len(self.walls)
        projected = [c.elapsed() + left for c in self.running.values() if (left := self._left(c, None)) is not None]
        return sum(projected) / len(projected) if projected else None

    def _left(self, cell: RunningCell, per_cell: float | None) -> float | None:
        p = cell.read()
        train = _train_left(p)
        if train is not None:
            # the part of a cell outside training (start-up, final validation), as finished cells spent it
            overhead = min(0.9, sum(self.overheads) / len(self.overheads)) if self.overheads else 0.0
            projected_wall = (p["train_elapsed_s"] + train) / (1 - overhead)
            return max(train, projected_wall - cell.elapsed())
        if per_cell is not None:
            return max(0.0, per_cell - cell.elapsed())
        return None

    def eta(self) -> float | None:
        """Seconds until the last cell should finish (None: nothing to go on yet)."""
        per_cell = self._per_cell()
        lefts = [self._left(c, per_cell) for c in self.running.values()]
        if any(left is None for left in lefts) or (self.waiting and per_cell is None):
            return None
        work = sum(lefts) + self.waiting * (per_cell or 0.0)  # type: ignore[arg-type]
        if not work:
            return 0.0
        at_once = max(1, min(self.slots or len(lefts) + self.waiting, len(lefts) + self.waiting))
        return max(max(lefts, default=0.0), work / at_once)  # type: ignore[type-var]

    def left_text(self) -> str:
        eta = self.eta()
        return "" if eta is None else f"about {duration(eta)} left"

    def _cell_text(self, cell: RunningCell) -> str:
        if cell.where:
            return f"{cell.label}: {cell.where}"
        p = cell.read()
        step, total = p.get("step"), p.get("total_steps")
        if isinstance(step, int) and isinstance(total, int) and total > 0:
            if p.get("stage") == "trained":
                return f"{cell.label}: validating"
            return f"{cell.label}: step {step}/{total} ({100 * step / total:.0f} %)"
        return f"{cell.label}: starting ({duration(cell.elapsed())})"

    def line(self) -> str:
        parts = [f"{self.done}/{self.total} done"]
        if self.running:
            parts.append(f"{len(self.running)} running ({'; '.join(map(self._cell_text, self.running.values()))})")
        if self.waiting:
            parts.append(f"{self.waiting} waiting")
        left = self.left_text()
        return f"... {', '.join(parts)}; {duration(time.perf_counter() - self.t0)} elapsed" + (f", {left}" if left
                                                                                                else "")

    def tick(self) -> None:
        """Print the progress line when ``every_s`` has passed since the last line."""
        if self.every_s > 0 and self.running and time.perf_counter() - self._last_line >= self.every_s:
            self.echo(self.line())
            self._last_line = time.perf_counter()

    def printed(self) -> None:
        """Another line was just printed (a cell started or ended): the next progress line waits its turn."""
        self._last_line = time.perf_counter()
