"""Small tensor operations shared by several plugins."""

from __future__ import annotations

import math
from numbers import Integral

import torch


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


def check_number(plugin: str, name: str, value: object, *, integer: bool = False, minimum: float = 0,
                 strict: bool = False) -> None:
    """A plugin constructor argument from YAML: raise ``ValueError("<plugin>: <name> must be ...")`` when
    it has the wrong type (bools are not numbers here) or lies below ``minimum`` (or at it, ``strict``)."""
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if ok and (value > minimum or (value == minimum and not strict)):
        return
    what = "integer" if integer else "number"
    if minimum == 0:
        bound = f"a positive {what}" if strict else f"a non-negative {what}"
    elif integer and minimum == 1 and not strict:
        bound = f"a positive {what}"
    else:
        bound = f"{'an' if integer else 'a'} {what} {'>' if strict else '>='} {minimum}"
    raise ValueError(f"{plugin}: {name} must be {bound}, got {value!r}")


def check_dropout(plugin: str, name: str, value: object) -> None:
    """A dropout rate from YAML: ``ValueError("<plugin>: <name> must be in [0, 1), got ...")`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{plugin}: {name} must be in [0, 1), got {value!r}")
