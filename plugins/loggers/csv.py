"""``csv``: every logged metric as a row of RUN_DIR/logs/metrics.csv, the resolved config as logs/hparams.yaml.

Lightning's CSVLogger, at the run folder's ``logs/`` (``save_dir``, provided by lrc) with no version
subfolder: a run folder holds one run. Needs nothing beyond the base install.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger

from lrc.constraints import PositiveInt
from lrc.registry import LOGGERS


@LOGGERS.register("csv")
class CSVMetricsLogger(CSVLogger):
    """Metrics as RUN_DIR/logs/metrics.csv, the config as logs/hparams.yaml.

    Args:
        flush_logs_every_n_steps: write the buffered rows to metrics.csv every this many logging steps.
    """

    def __init__(self, save_dir: str, flush_logs_every_n_steps: PositiveInt = 100):
        super().__init__(save_dir, name="", version="", flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    def experiment(self) -> Any:
        # Lightning warns when logs/ holds any file, because it replaces an earlier metrics.csv; logs/ also holds the
        # other loggers' files (tb/, mlflow.db), so the warning is kept only when there is a metrics.csv to replace
        with warnings.catch_warnings():
            if not (Path(self.log_dir) / "metrics.csv").exists():
                warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            return super().experiment
