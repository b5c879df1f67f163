"""Keyframe + delta: an alternative HiCo level-1 compressor that spends each frame's tokens on what changed.

InternVideo2.5's HiCo (paper §3.2) removes temporal redundancy by merging similar tokens inside a
clip (``tome``). Video codecs, and a line of token-reduction work, do it differently: keep one
keyframe and, for the frames after it, only the patches that changed. Run-Length Tokenization
(Choudhury et al., "Don't Look Twice", NeurIPS 2024, arXiv:2411.05222) drops patches repeated from
the previous frame; LongVU (Shen et al., 2024, arXiv:2410.17434, "spatial token reduction") keeps
the first frame of a window and prunes the later frames' tokens that are too similar to it at the
same spatial position. Both keep a variable number of tokens; lrc's compressor contract asks for an
exact count (``tokens_per_frame`` per frame, so the prompt's "FrameN:" slots can be laid out before
the video is encoded), so this plugin keeps the top-``k`` instead of thresholding:

* the clip's **first frame** (the keyframe) is average-pooled to ``k = tokens_per_frame`` tokens
  (a ``√k×√k`` grid when the frame's tokens form a square grid and ``k`` is a square, else ``k``
  adaptive windows along the token sequence);
* every **later frame** of the clip keeps the ``k`` tokens whose features moved most from the
  keyframe's token at the same position (L2 norm of the difference), in their spatial order. With
  ``emit: residual`` the kept tokens are the differences themselves (a codec's P-frame residual),
  with ``emit: token`` (default) the frame's own tokens;
* with ``mark_positions: true`` (default) a learned embedding of the kept token's grid position is
  added to it, because a selected token no longer says where it came from (RLT adds a length
  encoding for the same reason). It starts at zero, so at initialisation the output is exactly the
  selected tokens.

Output order: frame by frame, ``k`` tokens each, so output token ``j`` of a clip comes from frame
``j // k`` exactly. Each clip is compressed on its own (the keyframe is the clip's first frame), so
a long video can be streamed clip by clip. The selection is discrete and computed without gradient;
gradients reach the pooled keyframe tokens, the kept tokens and (with ``residual``) the keyframe.
Non-learnable apart from the position embedding; ``out_dim == in_dim``.

The plugin imports nothing from lrc: a compressor is a plain ``nn.Module`` whose constructor
signature is its config schema. ``in_dim`` and ``frame_tokens`` are filled in by lrc's builder
from the encoder (they are the registry's ``provided`` arguments and may not be set in YAML).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EMITS = ("token", "residual")


class KeyframeDeltaCompressor(nn.Module):
    """Keyframe pooled to ``tokens_per_frame``; later frames of each clip keep their most-changed tokens.

    ``forward(tokens [B, T, M, D]) -> [B, T·tokens_per_frame, D]``; ``T`` must be a multiple of
    ``clip_len`` and ``tokens_per_frame <= M``. See the module docstring for what is kept and why.

    Args:
        clip_len: frames per clip; the first is the keyframe, and the frame count must be a multiple of it.
        tokens_per_frame: tokens each frame keeps: the keyframe pooled to this many, the later frames their
            most-changed ones (at most the encoder's tokens per frame).
        emit: ``token``: the later frames' kept tokens as they are; ``residual``: their difference from the
            keyframe's token at the same position.
        mark_positions: add a learned embedding of each kept token's grid position (zero at initialisation).
    """

    def __init__(
        self,
        in_dim: int,
        frame_tokens: int,
        clip_len: int = 4,
        tokens_per_frame: int = 16,
        emit: str = "token",
        mark_positions: bool = True,
    ):
        super().__init__()
        problems = self.check_args(dict(clip_len=clip_len, tokens_per_frame=tokens_per_frame, emit=emit))
        if tokens_per_frame > frame_tokens:
            problems.append(("tokens_per_frame", f"{tokens_per_frame} is more than the {frame_tokens} tokens a frame "
                                                 f"has; a compressor cannot add tokens. Set it to at most {frame_tokens}"))
        if problems:
            raise ValueError("keyframe_delta: " + "; ".join(f"compressor.{k}: {what}" for k, what in problems))
        self.in_dim = self.out_dim = in_dim
        self.frame_tokens = frame_tokens
        self.clip_len = clip_len
        self.tokens_per_frame = tokens_per_frame
        self.emit = emit
        # A clip of one frame has no later frames: nothing is selected, so no embedding would be trained
        # (and an unused parameter breaks DDP without find_unused_parameters).
        self.position = nn.Embedding(frame_tokens, in_dim) if mark_positions and clip_len > 1 else None
        if self.position is not None:
            nn.init.zeros_(self.position.weight)

    @staticmethod
    def check_args(args: dict[str, Any]) -> list[tuple[str, str]]:
        """Value checks ``lrc validate`` runs before anything is built (types are checked from the signature)."""
        problems = []
        for key in ("clip_len", "tokens_per_frame"):
            if key in args and args[key] < 1:
                problems.append((key, f"must be at least 1, got {args[key]}"))
        if args.get("emit", "token") not in EMITS:
            problems.append(("emit", f"{args['emit']!r} is not one of {', '.join(EMITS)}"))
        return problems

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, frame_tokens={self.frame_tokens}, clip_len={self.clip_len}, "
                f"tokens_per_frame={self.tokens_per_frame}, emit={self.emit!r}")

    def pool_keyframe(self, key: torch.Tensor) -> torch.Tensor:
        """``[N, M, D] -> [N, k, D]``: adaptive average pooling, on the grid when both sides are squares."""
        n, m, d = key.shape
        k = self.tokens_per_frame
        side, out_side = math.isqrt(m), math.isqrt(k)
        if side * side == m and out_side * out_side == k:
            grid = key.transpose(1, 2).reshape(n, d, side, side)
            return F.adaptive_avg_pool2d(grid, out_side).reshape(n, d, k).transpose(1, 2)
        return F.adaptive_avg_pool1d(key.transpose(1, 2), k).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 4:
            raise ValueError(f"keyframe_delta: expected tokens [B, T, M, D], got shape {tuple(tokens.shape)}")
        b, t, m, d = tokens.shape
        if d != self.in_dim or m != self.frame_tokens:
            raise ValueError(f"keyframe_delta: got {m} tokens of dim {d} per frame, built for {self.frame_tokens} "
                             f"of dim {self.in_dim} (the encoder's num_tokens and out_dim)")
        if t % self.clip_len:
            raise ValueError(f"keyframe_delta: got T={t} frames, which is not a multiple of clip_len={self.clip_len}. "
                             f"Sample a multiple of {self.clip_len} frames (the sampler's num_frames), or change "
                             "clip_len.")
        k, c = self.tokens_per_frame, self.clip_len
        clips = tokens.reshape(b * t // c, c, m, d)  # every clip on its own: [N, c, M, D]
        keyframe = clips[:, 0]
        out = [self.pool_keyframe(keyframe)[:, None]]  # [N, 1, k, D]
        if c > 1:
            later = clips[:, 1:]
            delta = later - keyframe[:, None]  # [N, c-1, M, D]
            with torch.no_grad():  # which tokens to keep is a discrete choice, as in ToMe's matching
                change = delta.detach().float().norm(dim=-1)
                # a stable sort: on ties (a static scene) the earlier position wins, whatever the batch
                order = torch.sort(change, dim=-1, descending=True, stable=True).indices[..., :k]
                keep = order.sort(dim=-1).values  # back to spatial (row-major) order
            source = delta if self.emit == "residual" else later
            kept = source.gather(2, keep[..., None].expand(-1, -1, -1, d))
            if self.position is not None:
                kept = kept + self.position(keep).to(kept.dtype)
            out.append(kept)  # [N, c-1, k, D]
        return torch.cat(out, dim=1).reshape(b, t * k, d)
