"""A run's checkpoints: written durably and atomically, periodically, the last few kept; chosen on resume.

Layout of RUN_DIR/checkpoints/ (docs/checkpoints.md):

    step-00000040.ckpt   one per save, named by the optimizer step; the newest ``run.keep_last_checkpoints``
    step-00000050.ckpt   are kept (older ones are deleted once a newer one is safely on disk)
    last.ckpt            the newest of them (a hard link: no extra space; a copy where links are not allowed)

When (:class:`RunCheckpoints`): every ``run.checkpoint_every_n_steps`` optimizer steps, every
``run.checkpoint_every_minutes`` minutes of training (rank 0's clock decides for every rank), at the end of
each training epoch, and when SIGINT/SIGTERM stops a fit (lrc/train/interrupt.py). A save happens only after
an optimizer step (never in the middle of gradient accumulation), at a batch boundary, so a resume from any
of them continues exactly (the data position and the RNG states travel with it, lrc/train/module.py).

How (:class:`DurableCheckpointIO`, Lightning's CheckpointIO for every strategy that writes one file): the
checkpoint is serialised into a hidden temporary file in the checkpoints folder itself, flushed and fsynced,
then renamed over its name (lrc.files.atomic_writer). A kill, an error or a full disk at any moment leaves
every earlier checkpoint as it was; a full disk stops the run with :class:`lrc.files.DiskFullError` (exit
2); the temporary file a SIGKILL leaves behind is removed by the next process that takes the run folder.

Which one a resume uses (:func:`choose_checkpoint`): the newest that opens as a complete training
checkpoint (lrc.weights.checkpoints.read_training_checkpoint); a damaged one
is renamed ``*.unusable`` (kept, never read again) and the next older one is used, with a warning naming both.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lrc.files import atomic_writer, fsync_folder, temporary_path
from lrc.train.rundir import CHECKPOINTS, LAST, STEP_PATTERN, checkpoint_files
from lrc.weights.checkpoints import CheckpointError, read_training_checkpoint

log = logging.getLogger("lrc")

STATE_KEY = "lrc_run"  # what RunCheckpoints adds to every checkpoint


class DurableCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, fsynced, then renamed (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("DurableCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as fh:
            torch.save(checkpoint, fh)


def install_copy(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content, atomically: a hard link (no extra space), else a durable copy."""
    tmp = temporary_path(target)
    try:
        os.link(source, tmp)
    except OSError:
        with atomic_writer(target) as fh, open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 16 * 2**20)
        return
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(target.parent)


def install_link(source: Path, target: Path) -> None:
    """``target`` becomes a relative symlink to ``source`` (a folder checkpoint), atomically."""
    tmp = temporary_path(target)
    os.symlink(source.name, tmp)
    os.replace(tmp, target)
    fsync_folder(target.parent)


class RunCheckpoints(Checkpoint):
    """Periodic, epoch-end and on-demand saves into RUN_DIR/checkpoints (module docstring)."""

    def __init__(self, run_dir: Path, every_n_steps: int | None, every_minutes: float | None, keep_last: int):
        super().__init__()
        self.folder = Path(run_dir) / CHECKPOINTS
        self.last = self.folder / LAST
        self.every_n_steps, self.every_minutes, self.keep_last = every_n_steps, every_minutes, keep_last
        self.saved_step: int | None = None  # the optimizer step of the newest save (no second save of one step)
        self._stepped_at: int | None = None
        self._clock = time.monotonic()
        self.reason = ""

    # -- when -------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._clock = time.monotonic()
        self._stepped_at = trainer.global_step
        # a resumed run already has the checkpoint of the step it starts at
        self.saved_step = trainer.global_step if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        step = trainer.global_step
        if step == self._stepped_at:
            return  # no optimizer step in this batch: accumulating gradients, or a skipped batch
        self._stepped_at = step
        by_steps = bool(self.every_n_steps) and step % self.every_n_steps == 0
        by_time = bool(self.every_minutes) and time.monotonic() - self._clock >= 60 * self.every_minutes
        if self.every_minutes and trainer.world_size > 1:
            by_time = bool(trainer.strategy.broadcast(by_time, src=0))  # every rank saves, or none
        if by_steps or by_time:
            self.save(trainer, "periodic")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.save(trainer, "epoch end")

    # -- how --------------------------------------------------------------------------------
    def save(self, trainer: Any, reason: str) -> Path:
        """Save the training state now (every rank takes part; rank 0 writes), unless this step's is saved."""
        step = trainer.global_step
        path = self.folder / f"step-{step:08d}.ckpt"
        if self.saved_step == step:  # (a decision every rank takes alike: no file system look-up)
            return self.last
        self.reason = reason
        trainer.save_checkpoint(str(path), weights_only=False)  # the whole training state
        if trainer.is_global_zero:
            if path.is_dir():  # DeepSpeed writes a folder of its own: last.ckpt points at it
                install_link(path, self.last)
            else:
                install_copy(path, self.last)
            self._prune()
        self.saved_step = step
        self._clock = time.monotonic()
        log.debug("saved %s (%s)", path, reason)
        return self.last

    def _prune(self) -> None:
        steps = sorted((int(m.group(1)), p) for p in self.folder.iterdir() if (m := STEP_PATTERN.match(p.name)))
        for _, old in steps[:-self.keep_last]:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {"reason": self.reason,
                                 "saved": datetime.now().isoformat(timespec="seconds")}


def choose_checkpoint(run_dir: Path, rename_damaged: bool = True) -> Path:
    """The newest checkpoint of ``run_dir`` a resume can trust (module docstring). Damaged ones are renamed
    ``NAME.unusable`` (when ``rename_damaged``, i.e. by the process that holds the folder) with a warning.
    :class:`CheckpointError` names every file tried and why, when none can be used."""
    tried: list[str] = []
    damaged: set[tuple[int, int]] = set()  # last.ckpt is a hard link of a step file: one read per file
    for path in checkpoint_files(run_dir):
        try:
            st = path.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if path.is_dir():  # a DeepSpeed checkpoint folder: DeepSpeed checks it when it loads it
            return path
        try:
            if key in damaged:
                raise CheckpointError(f"checkpoint {path} is the same file as the one above")
            state = read_training_checkpoint(path)
            step = int(state["global_step"])
            del state
        except CheckpointError as exc:
            if key not in damaged:
                tried.append(str(exc))
            damaged.add(key)
            if rename_damaged and path.exists():
                aside = path.with_name(path.name + ".unusable")
                path.rename(aside)
                log.warning("%s; renamed it to %s", exc, aside.name)
            continue
        if tried:
            log.warning("resuming %s from %s (step %d), the newest checkpoint that can be used", run_dir, path, step)
        return path
    if not tried:
        raise CheckpointError(f"{run_dir} has no checkpoint (checkpoints/last.ckpt or step-N.ckpt)")
    raise CheckpointError(f"{run_dir} has no checkpoint a resume can use:\n  " + "\n  ".join(tried))


def check_fits(module: Any, ckpt: Path) -> None:
    """Before a resume loads ``ckpt``: its weights have the names and shapes of the model built from the run's
    config (else a :class:`CheckpointError` naming both, instead of Lightning's traceback mid-load)."""
    if ckpt.is_dir():
        return  # a DeepSpeed checkpoint folder, in DeepSpeed's own layout
    state = read_training_checkpoint(ckpt)["state_dict"]
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the model" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {ckpt} does not fit the model built from {ckpt.parent.parent / 'config.yaml'}: "
            f"{len(missing)} missing weights (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(shapes)} of other shapes (e.g. {shapes[:2]}). Was config.yaml edited after the run started? Restore "
            "it, or start a new run with another --out.")
