"""``lr_monitor``: the learning rate of each component (``lr/encoder``, ``lr/llm`` ...) as a logged metric.

The optimizer holds two parameter groups per component (weights with weight decay, biases and norms without;
lrc/train/module.py); both follow ``optim.lr`` and the schedule, so one value per component is logged, through
Lightning's ``log`` (written every ``trainer.log_every_n_steps`` steps, like the losses).
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L

from lrc.registry import CALLBACKS


def component_values(optimizer: Any, key: str) -> dict[str, float]:
    """``{component: group[key]}``, the first group of each component (groups are named after components)."""
    out: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        out.setdefault(str(group.get("name", f"group{i}")), float(group[key]))
    return out


@CALLBACKS.register("lr_monitor")
class LearningRateLogger(L.Callback):
    """Logs ``lr/<component>`` (and ``weight_decay/<component>``).

    Args:
        logging_interval: ``step``: with the losses, every ``trainer.log_every_n_steps`` steps; ``epoch``: once per
            epoch, the rate at its start.
        log_weight_decay: also log each component's weight decay.
    """

    def __init__(self, logging_interval: Literal["step", "epoch"] = "step", log_weight_decay: bool = False):
        self.logging_interval = logging_interval
        self.log_weight_decay = log_weight_decay

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, on_step: bool) -> None:
        if not trainer.optimizers:
            return
        keys = ("lr", "weight_decay") if self.log_weight_decay else ("lr",)
        for key in keys:
            for component, value in component_values(trainer.optimizers[0], key).items():
                pl_module.log(f"{key}/{component}", value, on_step=on_step, on_epoch=not on_step,
                              rank_zero_only=True)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.logging_interval == "step":
            self._log(trainer, pl_module, on_step=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.logging_interval == "epoch":
            self._log(trainer, pl_module, on_step=False)
