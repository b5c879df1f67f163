"""``throughput``: training speed and memory as logged metrics, for comparing runs after the fact.

Every ``trainer.log_every_n_steps`` steps (with the losses): ``perf/samples_per_s`` and ``perf/visual_tokens_per_s``
(all processes; visual tokens as the LLM received them, after compression), ``perf/steps_per_s`` (optimizer
steps) and ``perf/memory_gib`` (on CUDA the peak torch allocated on rank 0's device, else rank 0's resident
memory), measured over the last ``window`` training batches by the same meter as the progress display
(lrc/train/display.py).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from lrc.constraints import PositiveInt
from lrc.registry import CALLBACKS
from lrc.train.display import TrainingMeter, memory_gib


@CALLBACKS.register("throughput")
class ThroughputLogger(L.Callback):
    """Logs ``perf/samples_per_s``, ``perf/visual_tokens_per_s``, ``perf/steps_per_s`` and ``perf/memory_gib``.

    Args:
        window: the rates are measured over this many most recent training batches.
    """

    def __init__(self, window: PositiveInt = 20):
        self.meter = TrainingMeter(window)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.meter.start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.meter.mark(trainer, pl_module)
        rates = self.meter.rates(trainer.world_size)
        if not rates:
            return
        for key, value in {**rates, "memory_gib": memory_gib(pl_module)}.items():
            if value is not None:
                pl_module.log(f"perf/{key}", value, on_step=True, on_epoch=False, rank_zero_only=True)
