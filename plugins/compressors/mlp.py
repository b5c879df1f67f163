"""HiCo level 1 baseline: InternVL-style pixel shuffle + MLP, frame by frame.

InternVideo2.5 (paper §3.2, "HiCo") compares clip-level token merging with pooling, an MLP and a
Q-Former as the level-1 compressor. This is the MLP arm, the connector of InternVL2.5: pixel shuffle
folds every ``f×f`` neighbourhood of the frame's square token grid (``f = 1/shuffle``) into one token
with ``f²`` times the channels, then LayerNorm → Linear → GELU → Linear (InternVL's ``mlp1``).

The token count is therefore fixed by the grid, not chosen: ``tokens_per_frame = frame_tokens·shuffle²``
(InternVL2.5: 32×32 = 1024 → 256). This plugin takes no ``tokens_per_frame`` argument; a config's
``tokens_per_frame`` is dropped when switching to it. Each frame is compressed on its own (``clip_len``
exists only for the shared vocabulary and the frame-count check; default 1).

Output order: output token ``j`` comes from frame ``j // tokens_per_frame``; inside a frame, the
``f×f`` block at block-row ``r // f`` and block-column ``c // f`` of the grid gives token
``(r // f)·(side/f) + c // f`` (row-major), with the channels interleaved as InternVL does
(:func:`lrc.ops.pixel_shuffle`), so weights trained on InternVL's layout keep their meaning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lrc.constraints import Fraction, PositiveInt
from lrc.ops import pixel_shuffle
from lrc.protocols import check_clip_tokens
from lrc.registry import COMPRESSORS


@COMPRESSORS.register("mlp")
class MLPCompressor(nn.Module):
    """Pixel-shuffle each frame's square token grid by ``shuffle``, then an MLP to ``out_dim``.

    ``forward(tokens [B, T, frame_tokens, in_dim]) -> [B, T·tokens_per_frame, out_dim]`` with
    ``tokens_per_frame = frame_tokens·shuffle²`` and ``out_dim = hidden_dim or in_dim``. ``in_dim`` and
    ``frame_tokens`` come from the builder (the encoder's token dim and tokens per frame).

    Args:
        clip_len: frames per clip, for the frame-count check only: each frame is compressed on its own (default 1).
        shuffle: InternVL's pixel shuffle factor: ``1/shuffle`` × ``1/shuffle`` blocks of the frame's square token
            grid fold into one token, so a frame keeps ``frame_tokens·shuffle²`` tokens (64 → 16 at 0.5). This
            plugin takes no ``tokens_per_frame``.
        hidden_dim: width of the MLP (LayerNorm → Linear → GELU → Linear) and of its output; null: the encoder's
            token dim.
    """

    def __init__(
        self,
        in_dim: PositiveInt,
        frame_tokens: PositiveInt,
        clip_len: PositiveInt = 1,
        shuffle: Fraction = 0.5,
        hidden_dim: PositiveInt | None = None,
    ):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        factor = round(1 / shuffle)
        if abs(factor * shuffle - 1) > 1e-6:
            raise ValueError(
                f"mlp: shuffle={shuffle} is not 1/f for an integer f; pixel shuffle folds f×f neighbourhoods. "
                f"Set compressor.shuffle to 1.0, 0.5, 0.25, ..."
            )
        side = math.isqrt(frame_tokens)
        if side * side != frame_tokens or side % factor:
            why = (f"frame_tokens={frame_tokens} is not a square grid" if side * side != frame_tokens
                   else f"the grid side {side} (frame_tokens={frame_tokens}) is not divisible by 1/shuffle={factor}")
            raise ValueError(
                f"mlp: {why}; pixel shuffle with shuffle={shuffle} folds {factor}×{factor} blocks of a square token "
                f"grid. Use an encoder whose tokens per frame form a square grid with a side divisible by {factor} "
                f"(frame_tokens is the encoder's token count, e.g. set its image_size/patch_size), or change "
                f"compressor.shuffle."
            )
        try:  # shape-only dry run (meta device: no memory, no compute) of the exact op forward uses
            pixel_shuffle(torch.empty(1, frame_tokens, in_dim, device="meta"), 1 / factor)
        except RuntimeError as exc:
            raise ValueError(f"mlp: pixel shuffle by 1/{factor} fails on a {side}×{side} grid of {in_dim}-dim "
                             f"tokens ({exc}); set compressor.shuffle to 0.5 or 0.25") from exc
        self.in_dim = in_dim
        self.frame_tokens = frame_tokens
        self.clip_len = clip_len
        self.shuffle = float(shuffle)
        self.factor = factor
        self.tokens_per_frame = (side // factor) ** 2  # = round(frame_tokens * shuffle**2), exactly
        self.out_dim = hidden_dim or in_dim

        shuffled_dim = in_dim * factor * factor
        self.norm = nn.LayerNorm(shuffled_dim)
        self.fc1 = nn.Linear(shuffled_dim, self.out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(self.out_dim, self.out_dim)

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, frame_tokens={self.frame_tokens}, clip_len={self.clip_len}, "
                f"shuffle={self.shuffle}, tokens_per_frame={self.tokens_per_frame}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, m, d = check_clip_tokens("mlp", tokens, self.in_dim, self.clip_len, self.frame_tokens)
        x = pixel_shuffle(tokens.reshape(b * t, m, d), 1 / self.factor)  # [B·T, k, d·f²], row-major blocks
        x = self.fc2(self.act(self.fc1(self.norm(x))))
        return x.reshape(b, t * self.tokens_per_frame, self.out_dim)
