"""SIGINT and SIGTERM during ``lrc fit``: finish the step, save, say how to resume.

Lightning's own SIGTERM handler (its ``_SignalConnector``) is composed with the one here, not replaced:
Lightning registers it when a fit or validate starts and calls any handler that was there before. It
stops evaluation loops, and raises ``SIGTERMException`` after a training step; both paths end in
``on_exception`` below. Lightning has no graceful path for SIGINT (a ``KeyboardInterrupt`` lands in the
middle of a step, possibly between backward and the optimizer step), so this handler turns Ctrl-C into
"stop after this step" as well. A second Ctrl-C stops at once, without saving.
"""

from __future__ import annotations

import logging
import os
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
    """After the optimizer step that a signal arrived in: save checkpoints/last.ckpt (weights, optimizer,
    scheduler, loop state and data position) and interrupted.json, then stop with :class:`Interrupted`."""

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir
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

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.signum is not None:  # this batch's optimizer step is done
            raise Interrupted(self.signum)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signum = self.signum or signal.SIGTERM
        elif not isinstance(exception, Interrupted):
            return  # an error (a non-finite loss, a bug): the last good checkpoint stays as it is
        if trainer.state.stage != RunningStage.TRAINING:
            return  # stopped during evaluation: the last checkpoint already holds the training state
        # written beside, then renamed: a kill during the save leaves the previous last.ckpt intact
        tmp = self.ckpt_path.with_name("last.ckpt.tmp")
        trainer.save_checkpoint(str(tmp))
        if trainer.is_global_zero:
            os.replace(tmp, self.ckpt_path)
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
