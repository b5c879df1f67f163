"""``sgd``: stochastic gradient descent with (Nesterov) momentum, torch's SGD.

Each parameter group brings its own learning rate and weight decay (``optim.lr``, ``optim.weight_decay``;
lrc/train/module.py); the arguments here are SGD's own.
"""

from __future__ import annotations

from typing import Any

import torch

from lrc.constraints import UnitInterval
from lrc.registry import OPTIMIZERS


@OPTIMIZERS.register("sgd")
class SGD(torch.optim.SGD):
    """torch's SGD over lrc's parameter groups.

    Args:
        momentum: the momentum factor, in [0, 1] (0: plain SGD).
        dampening: dampening of the momentum, in [0, 1].
        nesterov: Nesterov momentum; needs momentum > 0 and dampening 0.
    """

    def __init__(
        self,
        params: list[dict[str, Any]],
        momentum: UnitInterval = 0.9,
        dampening: UnitInterval = 0.0,
        nesterov: bool = False,
    ):
        for key, what in self.check_args(dict(momentum=momentum, dampening=dampening, nesterov=nesterov)):
            raise ValueError(f"sgd: {key}: {what}")
        super().__init__(params, momentum=momentum, dampening=dampening, nesterov=nesterov)

    @staticmethod
    def check_args(args: dict[str, Any]) -> list[tuple[str, str]]:
        momentum, dampening = args.get("momentum", 0.9), args.get("dampening", 0.0)
        if args.get("nesterov") and (momentum <= 0 or dampening != 0):
            return [("nesterov", f"needs momentum > 0 and dampening 0 (momentum={momentum}, dampening={dampening})")]
        return []
