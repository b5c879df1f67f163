"""RUN_DIR/progress.json: how far a fit's training is, for ``lrc ablate``'s progress lines (lrc/commands/ablate/progress.py).

Fields: ``stage`` ("train", then "trained"), ``step`` (optimizer steps taken), ``first_step`` (the step this
process started at: 0, or a resumed run's step), ``total_steps`` and ``train_elapsed_s`` (seconds of training in
this process). Written atomically by rank 0, at most every ``every_s`` seconds and when training ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L

from lrc.files import write_json


class ProgressFile(L.Callback):
    """Keeps ``RUN_DIR/progress.json`` current while a fit trains (fields above)."""

    def __init__(self, run_dir: Path, every_s: float = 5.0):
        self.path = Path(run_dir) / "progress.json"
        self.every_s = every_s
        self.t0 = time.perf_counter()
        self.first_step = 0
        self.total_steps: int | None = None
        self._last = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = self._last = time.perf_counter()
        self.first_step = trainer.global_step
        try:
            total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
            self.total_steps = int(total) if total != float("inf") else None
        except Exception:  # noqa: BLE001 - an unsized loader: no total
            self.total_steps = None
        self._write(trainer, "train")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if time.perf_counter() - self._last >= self.every_s:
            self._last = time.perf_counter()
            self._write(trainer, "train")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "trained")

    def _write(self, trainer: L.Trainer, stage: str) -> None:
        if trainer.is_global_zero:
            write_json(self.path, {"stage": stage, "step": trainer.global_step, "first_step": self.first_step,
                                   "total_steps": self.total_steps,
                                   "train_elapsed_s": round(time.perf_counter() - self.t0, 3)})
