"""``mlflow``: metrics, the resolved config (as parameters) and tags in an MLflow run.

By default the tracking store is a file of the run itself, the SQLite database RUN_DIR/logs/mlflow.db, with
artifacts (none by default) under RUN_DIR/logs/mlartifacts: nothing leaves the machine; browse it with
``mlflow ui --backend-store-uri sqlite:///RUN_DIR/logs/mlflow.db``. (MLflow 3 refuses its older folder store
unless MLFLOW_ALLOW_FILE_STORE=true.) ``tracking_uri`` names a tracking server, or any store MLflow accepts,
instead. The MLflow run is named after the lrc run (``run.name/<run folder>``).
Checkpoints stay in the run folder: none is uploaded as an artifact. Needs the ``mlflow`` extra
(``pip install "lrc-video[mlflow]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

from lightning.pytorch.loggers import MLFlowLogger

from lrc.constraints import Name, Text
from lrc.errors import not_installed, require
from lrc.registry import LOGGERS

NEEDED_BY = "loggers plugin 'mlflow'"
TrackingURI = Annotated[str, Text("an MLflow tracking URI (http://host:5000, sqlite:///path/mlflow.db, ...)")]


@LOGGERS.register("mlflow")
class MLflowRunLogger(MLFlowLogger):
    """An MLflow run named ``run.name/<run folder>``, offline in the run folder unless ``tracking_uri`` is given.

    Args:
        experiment_name: the MLflow experiment the run belongs to (created when missing).
        tracking_uri: where to track: null for the SQLite store RUN_DIR/logs/mlflow.db (offline), else an MLflow
            server (``http://host:5000``) or any store URI MLflow accepts.
        tags: tags of the run, a mapping of names to values.
    """

    def __init__(
        self,
        save_dir: str,
        run_name: str,
        experiment_name: Name = "lrc",
        tracking_uri: Optional[TrackingURI] = None,
        tags: Optional[dict[Name, Name]] = None,
    ):
        require("mlflow", NEEDED_BY, extra="mlflow")
        logs = Path(save_dir).resolve()
        if tracking_uri is None:
            logs.mkdir(parents=True, exist_ok=True)
        uri = tracking_uri or f"sqlite:///{logs / 'mlflow.db'}"
        artifacts = None if tracking_uri else (logs / "mlartifacts").as_uri()
        super().__init__(experiment_name=experiment_name, run_name=run_name, tracking_uri=uri, tags=tags or None,
                         log_model=False, artifact_location=artifacts)

    @staticmethod
    def check_args(args: dict[str, Any]) -> list[tuple[str, str]]:
        return [("name", what) for what in not_installed("mlflow", NEEDED_BY, extra="mlflow")]
