"""``wandb``: metrics and the resolved config in a Weights & Biases run, offline by default.

Offline (the default) writes the run under RUN_DIR/logs/wandb and sends nothing; ``wandb sync
RUN_DIR/logs/wandb/offline-run-*`` uploads it later. ``offline: false`` logs live (``wandb login`` first). The W&B
run is named after the lrc run (``run.name/<run folder>``); ``group`` gathers runs, e.g. the cells of one ablation.
Checkpoints stay in the run folder: none is uploaded. Needs the ``wandb`` extra (``pip install "lrc-video[wandb]"``).
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch.loggers import WandbLogger

from lrc.constraints import Name
from lrc.errors import not_installed, require
from lrc.registry import LOGGERS

NEEDED_BY = "loggers plugin 'wandb'"


@LOGGERS.register("wandb")
class WandbRunLogger(WandbLogger):
    """A W&B run named ``run.name/<run folder>``, offline by default.

    Args:
        project: the W&B project.
        entity: the W&B user or team (null: your default entity).
        group: a group of runs, e.g. the cells of one ablation.
        tags: tags of the run.
        offline: keep the run in RUN_DIR/logs/wandb until ``wandb sync``; false logs live (after ``wandb login``).
    """

    def __init__(
        self,
        save_dir: str,
        run_name: str,
        project: Name = "lrc",
        entity: Optional[Name] = None,
        group: Optional[Name] = None,
        tags: Optional[list[Name]] = None,
        offline: bool = True,
    ):
        require("wandb", NEEDED_BY, extra="wandb")
        super().__init__(name=run_name, save_dir=save_dir, offline=offline, project=project, entity=entity,
                         group=group, tags=tags or None, log_model=False)

    @staticmethod
    def check_args(args: dict[str, Any]) -> list[tuple[str, str]]:
        return [("name", what) for what in not_installed("wandb", NEEDED_BY, extra="wandb")]
