"""Small tensor operations shared by several plugins."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import nn


def pixel_shuffle(tokens: torch.Tensor, scale: float) -> torch.Tensor:
    """InternVL's pixel shuffle on a square grid of patch tokens.

    ``tokens`` is ``[N, h*w, C]`` with ``h == w``; ``scale=0.5`` folds every 2×2 neighbourhood into
    one token, giving ``[N, h*w/4, 4*C]`` (InternVL2.5: 32×32×1024 → 16×16×4096). Channels are
    interleaved exactly as InternVL does (width fold first, then height), so weights trained on
    InternVL's layout keep their meaning.
    """
    n, m, c = tokens.shape
    side = math.isqrt(m)
    if side * side != m:
        raise ValueError(f"pixel_shuffle needs a square token grid, got {m} tokens per image")
    factor = round(1 / scale)
    if abs(factor * scale - 1) > 1e-6:
        raise ValueError(f"pixel_shuffle scale must be 1/n for a whole number n, got {scale}")
    if side % factor:
        raise ValueError(f"pixel_shuffle scale {scale} needs the grid side ({side}) divisible by {factor}")
    x = tokens.reshape(n, side, side, c)
    # N, H, W, C -> N, H, W*s, C/s
    x = x.reshape(n, side, round(side * scale), round(c / scale))
    x = x.permute(0, 2, 1, 3).contiguous()
    # N, W*s, H, C/s -> N, W*s, H*s, C/(s*s)
    x = x.reshape(n, round(side * scale), round(side * scale), round(c / (scale * scale)))
    x = x.permute(0, 2, 1, 3).contiguous()
    return x.reshape(n, -1, x.shape[-1])


def is_int(value: object) -> bool:
    """A whole number from YAML or from video metadata (numpy integers too), never a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite number from YAML or from video metadata (ints, floats, numpy scalars), never a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def gelu_mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear → GELU → Linear, the small MLP several heads use (its state-dict keys: ``0.*``, ``2.*``)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))
