"""data/wait_s and data/wait_fraction (lrc/train/data_wait.py): the time between one training step's end and the
next one's start, over the time of the steps and the waits; validation inside an epoch is neither."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from lrc.train.data_wait import DataWait


def test_waiting_and_busy_time_are_told_apart():
    timer, trainer = DataWait(), SimpleNamespace(training=True)
    timer.on_train_epoch_start(trainer, None)
    time.sleep(0.05)  # the first batch is fetched
    for i in range(2):
        timer.on_train_batch_start(trainer, None, None, i)
        time.sleep(0.02)  # the step
        timer.on_train_batch_end(trainer, None, None, None, i)
        if i == 0:
            timer.on_validation_start(trainer, None)
            time.sleep(0.5)  # validation inside the epoch: not counted
            timer.on_validation_end(trainer, None)
            time.sleep(0.03)  # the next batch
    timer.on_train_epoch_end(trainer, None)
    time.sleep(0.5)  # after the epoch: not counted
    wait, busy = timer.wait_s, timer.busy_s
    # sleeps overrun on a busy machine: the bounds only tell counted from uncounted (0.5 s each)
    assert 0.08 <= wait < 0.45 and 0.04 <= busy < 0.45, (wait, busy)
    metrics = timer.metrics()
    assert metrics["data/wait_s"] == round(wait, 2)
    assert metrics["data/wait_fraction"] == pytest.approx(wait / (wait + busy), abs=1e-4)


def test_no_step_no_fraction():
    assert DataWait().metrics() == {"data/wait_s": 0.0, "data/wait_fraction": 0.0}
