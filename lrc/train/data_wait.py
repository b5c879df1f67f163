"""How long training waited for its data: ``data/wait_s`` and ``data/wait_fraction`` in RUN_DIR/metrics.json.

A step's *busy* time runs from ``on_train_batch_start`` to ``on_train_batch_end``: forward, backward, the
optimizer and the callbacks of that batch. The time from one step's end to the next step's start (and from an
epoch's start to its first step) is spent getting the next batch — from the DataLoader's worker processes, or
decoding it in the training process with ``data.num_workers: 0`` — plus Lightning's small per-step overhead:
that is the *wait*. Validation inside an epoch is neither. ``wait_fraction = wait / (wait + busy)``: near 0 when
the workers keep up (decoding overlaps the steps), large when the run is bound by decoding (more workers,
approximate frames — docs/data.md "Reading frames" — or ``data.cache_frames`` help).

The callback is the last in the trainer's list, so that its ``on_train_batch_end`` runs after every other
callback's (a checkpoint saved at a step end counts as busy, not as waiting). Each rank measures its own;
rank 0's figures go to metrics.json.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback


class DataWait(Callback):
    """Sums the training loop's waiting time for batches and its busy time over the fit (module docstring)."""

    def __init__(self) -> None:
        self.wait_s = 0.0
        self.busy_s = 0.0
        self._since: float | None = None  # when the loop began waiting for the next batch
        self._started: float | None = None  # when the current step began

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._since = time.perf_counter()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._since is not None:
            self.wait_s += now - self._since
        self._since, self._started = None, now

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._started is not None:
            self.busy_s += now - self._started
        self._since, self._started = now, None

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._since = None  # validation inside an epoch is not waiting for training data

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.training:
            self._since = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._since = None

    def metrics(self) -> dict[str, float]:
        """``data/wait_s`` and ``data/wait_fraction`` (0 when no step ran)."""
        total = self.wait_s + self.busy_s
        return {"data/wait_s": round(self.wait_s, 2),
                "data/wait_fraction": round(self.wait_s / total, 4) if total > 0 else 0.0}
