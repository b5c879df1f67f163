"""HiCo level 1 baseline: non-learnable pooling of each frame (or each clip) to an exact token count.

InternVideo2.5 (paper §3.2, "HiCo") compares clip-level token merging with pooling, an MLP and a
Q-Former as the level-1 compressor. This is the pooling arm: average or max pooling, no parameters.

``scope`` chooses what is pooled together:

* ``spatial`` — each frame on its own. The frame's ``M`` tokens are pooled to ``tokens_per_frame``.
  Frames never mix, so output token ``j`` comes from frame ``j // tokens_per_frame`` exactly.
* ``spatiotemporal`` — each clip of ``clip_len`` frames jointly over (t, h, w), to
  ``clip_len·tokens_per_frame`` tokens. Time is pooled as much as the count allows: the clip is cut
  into ``clip_len / g`` equal windows of ``g`` consecutive frames, with ``g`` the largest divisor of
  ``clip_len`` such that ``g·tokens_per_frame <= M`` (no window may need more tokens than a frame
  has), and each window is pooled over its ``g`` frames and space to ``g·tokens_per_frame`` tokens.
  E.g. clip_len 4, M 256, 16 tokens per frame: ``g = 4``, the whole clip is pooled to one 8×8 grid
  of 64 tokens, each averaging 4 frames × a 2×2 patch. When ``tokens_per_frame == M`` there is
  nothing to compress and ``g = 1`` (the identity). ``spatial`` is the same with ``g = 1`` always.

Grid or sequence. When ``M`` is a perfect square and so is a window's output count
``g·tokens_per_frame`` (``tokens_per_frame`` itself for ``spatial``), the frames are square grids and
a window is pooled by adaptive 3-D pooling over (t, h, w) to (1, h', w'): output tokens keep the
spatial layout, in row-major order. Otherwise (e.g. ``tokens_per_frame = 8``, or an encoder whose
tokens are not a grid) each frame is a 1-D sequence and a window is pooled over (t, sequence) to
(1, g·tokens_per_frame) — adaptive 1-D windows along the sequence, spanning all ``g`` frames — which
still hits the exact count; windows may overlap by one token when the sizes do not divide, as in
``torch.nn.functional.adaptive_avg_pool1d``.

Output order: windows in time order, and inside a window the pooled tokens in row-major (or sequence)
order. A window of ``g`` frames gives ``g·tokens_per_frame`` tokens, so output token ``j`` of a clip
comes from the window holding frame ``j // tokens_per_frame`` — the "FrameN:" text stays truthful up
to the window.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lrc.constraints import PositiveInt
from lrc.protocols import check_clip_tokens
from lrc.registry import COMPRESSORS

MODES = ("avg", "max")
SCOPES = ("spatial", "spatiotemporal")


def _square_side(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n else None


def frames_per_window(clip_len: int, tokens_per_frame: int, frame_tokens: int, scope: str) -> int:
    """``g``: how many consecutive frames one pooling window covers (see the module docstring)."""
    if scope == "spatial":
        return 1
    return max(g for g in range(1, clip_len + 1) if clip_len % g == 0 and g * tokens_per_frame <= frame_tokens)


@COMPRESSORS.register("pooling")
class PoolingCompressor(nn.Module):
    """Pool each frame (``scope=spatial``) or clip (``scope=spatiotemporal``) to ``tokens_per_frame`` per frame.

    ``forward(tokens [B, T, M, D]) -> [B, T·tokens_per_frame, D]``; ``T`` must be a multiple of
    ``clip_len`` and ``tokens_per_frame <= M``. ``mode`` is ``avg`` or ``max``. Non-learnable: no
    parameters, ``out_dim == in_dim``. See the module docstring for the windows and the output order.

    Args:
        clip_len: frames per clip; the video's frame count must be a multiple of it.
        tokens_per_frame: tokens each frame keeps, at most the encoder's tokens per frame; the count is exact
            (square grids are pooled in 2-D with their layout kept, anything else as a 1-D sequence).
        mode: ``avg`` or ``max`` pooling.
        scope: ``spatial``: each frame pooled on its own; ``spatiotemporal``: each clip pooled jointly over time and
            space, in windows of as many frames as ``tokens_per_frame`` allows.
    """

    def __init__(
        self,
        in_dim: PositiveInt,
        clip_len: PositiveInt = 4,
        tokens_per_frame: PositiveInt = 16,
        mode: Literal[MODES] = "avg",
        scope: Literal[SCOPES] = "spatial",
    ):
        """Argument types, ranges and choices are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        self.in_dim = in_dim
        self.clip_len = clip_len
        self.tokens_per_frame = tokens_per_frame
        self.mode = mode
        self.scope = scope
        self.out_dim = in_dim

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, clip_len={self.clip_len}, tokens_per_frame={self.tokens_per_frame}, "
                f"mode={self.mode!r}, scope={self.scope!r}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, m, d = check_clip_tokens("pooling", tokens, self.in_dim, self.clip_len)
        k = self.tokens_per_frame
        if k > m:
            raise ValueError(
                f"pooling: tokens_per_frame={k} is more than the {m} tokens a frame has; pooling cannot add "
                f"tokens. Set tokens_per_frame <= {m}."
            )

        g = frames_per_window(self.clip_len, k, m, self.scope)
        per_window = g * k  # output tokens of one window of g frames
        # Channels first for torch's pooling ops: one row per window of g frames, [N, D, g, M].
        x = tokens.reshape(b * t // g, g, m, d).permute(0, 3, 1, 2)
        side, out_side = _square_side(m), _square_side(per_window)
        if side is not None and out_side is not None:
            # Grid: (t, h, w) → (1, h', w'), so output tokens keep the frame's spatial layout.
            x = x.reshape(x.shape[0], d, g, side, side)
            pool3d = F.adaptive_avg_pool3d if self.mode == "avg" else F.adaptive_max_pool3d
            y = pool3d(x, (1, out_side, out_side))
        else:
            # Sequence: (t, m) → (1, per_window): all g frames at once, adaptive 1-D windows over the
            # frame's token sequence (pooling the flattened g·M sequence instead would, when k divides
            # M, give windows that never cross a frame boundary, i.e. no temporal pooling at all).
            pool2d = F.adaptive_avg_pool2d if self.mode == "avg" else F.adaptive_max_pool2d
            y = pool2d(x, (1, per_window))
        # [N, D, ...] → [N, per_window, D] in row-major (or sequence) order, windows in time order.
        return y.reshape(y.shape[0], d, per_window).transpose(1, 2).reshape(b, t * k, d)
