"""SIGINT and SIGTERM during ``lrc fit``: finish the step, save, say how to resume.

While a trainer runs, the handler here is the only one for both signals: Lightning installs its own SIGTERM
handler when a fit or validate starts (its ``_SignalConnector``), and :class:`GracefulInterrupt` puts this
one back as training (or validation) starts. Lightning's would make a rank stop on its own: under DDP a
rank that leaves the loop alone leaves the others waiting for it in a collective. Here a signal only
records itself; after each optimizer step the ranks agree (one all-reduce) whether any of them got one,
and then every rank stops after that same step and takes part in saving the checkpoint. SIGTERM (a
scheduler's preemption, ``kill``) and Ctrl-C take the same path; a second Ctrl-C stops at once, unsaved.
During validation a single process stops at the next batch; several ranks finish the validation first
(their shards may differ in length, so no per-batch agreement is possible) and stop at the next step.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lrc.errors import Interrupted
from lrc.files import write_json

log = logging.getLogger("lrc")


@contextmanager
def handling_stop_signals(handler: Any) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block (the previous handlers after it). Only the main
    thread receives signals, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class GracefulInterrupt(Checkpoint):
    """After the optimizer step that a signal arrived in (on any rank): save the training state through
    ``checkpoints`` (lrc/train/checkpointing.py) and interrupted.json, then stop with :class:`Interrupted`."""

    def __init__(self, run_dir: Path, checkpoints: Any):
        super().__init__()
        self.run_dir = run_dir
        self.checkpoints = checkpoints
        self.ckpt_path = run_dir / "checkpoints" / "last.ckpt"
        self.signum: int | None = None
        self.saved = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: finishing the current step, then saving %s (Ctrl-C again stops at once, "
                    "unsaved)", signal.Signals(signum).name, self.ckpt_path)

    def installed(self) -> Any:
        return handling_stop_signals(self._handle)

    def _reinstall(self) -> None:
        """Lightning registered its SIGTERM handler when this trainer started: this one replaces it (module doc)."""
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, self._handle)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._reinstall()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._reinstall()

    def _agreed(self, trainer: Any) -> int | None:
        """The signal any rank received (the largest number, when several), the same on every rank."""
        if trainer.world_size <= 1:
            return self.signum
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.signum or 0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        signum = self._agreed(trainer)
        if signum is not None:  # this batch's optimizer step is done, on every rank
            self.signum = signum
            raise Interrupted(signum)

    def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.signum is not None and trainer.world_size <= 1:
            raise Interrupted(self.signum)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signum = self.signum or signal.SIGTERM
        elif not isinstance(exception, Interrupted):
            return  # an error (a non-finite loss, a bug): the last good checkpoint stays as it is
        if trainer.state.stage != RunningStage.TRAINING:
            return  # stopped during evaluation: the last checkpoint already holds the training state
        # written beside, fsynced, then renamed: a kill during the save leaves the previous checkpoints intact
        self.checkpoints.save(trainer, signal.Signals(self.signum or signal.SIGTERM).name)
        if trainer.is_global_zero:
            assert self.signum is not None
            write_json(self.run_dir / "interrupted.json", {
                "signal": signal.Signals(self.signum).name,
                "global_step": trainer.global_step,
                "epoch": trainer.current_epoch,
                "batches_done_in_epoch": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
                "time": datetime.now().isoformat(timespec="seconds"),
                "checkpoint": str(self.ckpt_path),
            })
        self.saved = True
