"""``tensorboard``: event files under RUN_DIR/logs/tb (``tensorboard --logdir runs/``), with the resolved config
in TensorBoard's HPARAMS tab.

Lightning's TensorBoardLogger without its placeholder ``hp_metric`` (-1 logged next to the hyperparameters).
"""

from __future__ import annotations

from lightning.pytorch.loggers import TensorBoardLogger

from lrc.constraints import PositiveInt
from lrc.errors import require
from lrc.registry import LOGGERS


@LOGGERS.register("tensorboard")
class TensorBoardEventLogger(TensorBoardLogger):
    """Event files under RUN_DIR/logs/tb, the config in the HPARAMS tab.

    Args:
        flush_secs: write the pending events to disk at least this often (seconds).
    """

    def __init__(self, save_dir: str, flush_secs: PositiveInt = 120):
        require("tensorboard", "loggers plugin 'tensorboard'", package="tensorboard")
        super().__init__(save_dir, name="", version="tb", default_hp_metric=False, flush_secs=flush_secs)
