"""``adamw``: AdamW (Adam with decoupled weight decay, Loshchilov & Hutter 2019), the optimizer of InternVideo2.5's
training recipes (paper §3.5) and lrc's default.

Each parameter group brings its own learning rate and weight decay (``optim.lr`` per component, ``optim.weight_decay``
on weights but not on biases and norms: lrc/train/module.py); the arguments here are AdamW's own.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import torch

from lrc.constraints import PositiveFloat, Range
from lrc.registry import OPTIMIZERS

Beta = Annotated[float, Range(0, 1, max_open=True)]  # a moment's decay rate, [0, 1)


@OPTIMIZERS.register("adamw")
class AdamW(torch.optim.AdamW):
    """torch's AdamW over lrc's parameter groups.

    Args:
        betas: the decay rates of the first and second moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability.
        fused: torch's fused CUDA implementation (true), or not (false); null leaves the choice to torch.
    """

    def __init__(
        self,
        params: list[dict[str, Any]],
        betas: tuple[Beta, Beta] = (0.9, 0.999),
        eps: PositiveFloat = 1e-8,
        fused: Optional[bool] = None,
    ):
        super().__init__(params, betas=(float(betas[0]), float(betas[1])), eps=eps, fused=fused)
