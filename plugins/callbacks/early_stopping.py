"""``early_stopping``: stop training when a validation metric stops improving (Lightning's EarlyStopping).

It is judged at each validation during training, so validation must run while training: set
``trainer.check_val_every_n_epoch`` (or ``trainer.val_check_interval``) accordingly. ``monitor`` is a metric the
run logs: ``val/loss``, ``val/mcq_acc``, a head's ``val/<task>/<metric>`` (docs/logging.md lists them); a name the
run does not log stops the run with Lightning's error, which lists the ones it has. A stopped run still ends with
its final validation and metrics.json, like any other.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from lightning.pytorch.callbacks import EarlyStopping

from lrc.constraints import NonNegativeFloat, PositiveInt, Range, Text
from lrc.registry import CALLBACKS

Metric = Annotated[str, Text("a logged metric, e.g. val/loss or val/mcq_acc")]
Threshold = Annotated[float, Range()]


@CALLBACKS.register("early_stopping")
class EarlyStoppingCallback(EarlyStopping):
    """Stops training when ``monitor`` stops improving at the validations during training.

    Args:
        monitor: the logged metric to watch, e.g. ``val/loss`` or ``val/mcq_acc``.
        mode: ``min``: lower is better (a loss); ``max``: higher is better (an accuracy).
        patience: validations without improvement before training stops.
        min_delta: a change smaller than this does not count as an improvement.
        stopping_threshold: stop as soon as the metric reaches this value (null: never).
        divergence_threshold: stop as soon as the metric is worse than this value (null: never).
        check_finite: stop when the metric becomes NaN or infinite.
    """

    def __init__(
        self,
        monitor: Metric = "val/loss",
        mode: Literal["min", "max"] = "min",
        patience: PositiveInt = 3,
        min_delta: NonNegativeFloat = 0.0,
        stopping_threshold: Optional[Threshold] = None,
        divergence_threshold: Optional[Threshold] = None,
        check_finite: bool = True,
    ):
        super().__init__(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta,
                         stopping_threshold=stopping_threshold, divergence_threshold=divergence_threshold,
                         check_finite=check_finite, verbose=True)
