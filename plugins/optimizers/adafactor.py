"""``adafactor``: Adafactor (Shazeer & Stern 2018), transformers' implementation: factored second moments, so its
state is about the size of the parameters' row and column sums instead of two full copies (AdamW's).

lrc drives it with explicit learning rates: each parameter group's ``optim.lr`` and the schedule
(``optim.schedule``), so transformers' own relative step sizes and warmup are off; ``scale_parameter`` multiplies
each update by the parameter's RMS as the paper does. Weight decay is the group's (``optim.weight_decay``).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from transformers.optimization import Adafactor as TransformersAdafactor

from lrc.constraints import PositiveFloat, Range, UnitInterval
from lrc.registry import OPTIMIZERS

DecayRate = Annotated[float, Range(-1, 0)]  # the exponent of the second moment's running-average decay


@OPTIMIZERS.register("adafactor")
class Adafactor(TransformersAdafactor):
    """transformers' Adafactor over lrc's parameter groups, with lrc's learning rates and schedule.

    Args:
        eps: regularisers added to the squared gradient and to the parameter scale.
        clip_threshold: the update's root mean square is clipped to this.
        decay_rate: the exponent of the second moment's running-average decay, in [-1, 0].
        beta1: the first moment's decay rate; null keeps no first moment (the least memory).
        scale_parameter: multiply each update by the parameter's root mean square (Adafactor's relative scale).
    """

    def __init__(
        self,
        params: list[dict[str, Any]],
        eps: tuple[PositiveFloat, PositiveFloat] = (1e-30, 1e-3),
        clip_threshold: PositiveFloat = 1.0,
        decay_rate: DecayRate = -0.8,
        beta1: Optional[UnitInterval] = None,
        scale_parameter: bool = False,
    ):
        super().__init__(params, lr=None, eps=(float(eps[0]), float(eps[1])), clip_threshold=clip_threshold,
                         decay_rate=decay_rate, beta1=beta1, scale_parameter=scale_parameter, relative_step=False,
                         warmup_init=False)
