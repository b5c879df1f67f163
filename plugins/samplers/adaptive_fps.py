"""Adaptive frame sampling: dense for short videos, sparse for long ones (InternVideo2.5 paper;
Paper §3.1 (adaptive temporal sampling): 15 fps where motion matters, 1 fps for minute- and hour-long videos,
64–512 frames in stage 3).

    rate  = dense_fps if duration < threshold_s else sparse_fps
    count = round(duration · rate)                      (halves round up)
    count = clamp(count, min_frames, max_frames), a multiple of clip_len

then frames at segment midpoints (``lrc.data.sampling.midpoint_indices``). As in the fixed-fps
sampler, the bounds are first moved inward to multiples of ``clip_len`` (``min_frames`` up,
``max_frames`` down; an error if none lies between them) and the count is rounded down to a multiple
before clamping, so it is a multiple of ``clip_len`` within the bounds as written.

Approximate frames by default (``exact: false``): for a video of ``threshold_s`` or longer, sampled at
``sparse_fps`` (one frame per second by default), a frame moved by less than half the sampling interval shows
the same scene, and the reader takes a key frame instead of a sampled frame only where the key frame lies
closer to it than to any other sampled frame, so the frames stay distinct, in order and evenly spread; their
true indices and timestamps go to the model and the task targets (docs/data.md, "Reading frames"). On long
videos that cuts decoding several-fold (docs/benchmarks.md); where sampling is dense (short videos,
``dense_fps``) nearly every frame is read exactly anyway. ``exact: true`` gives exact frames.
"""

from __future__ import annotations

import numpy as np

from lrc.data.sampling import check_video, fit_count, frame_bounds, midpoint_indices, round_half_up
from lrc.constraints import NonNegativeFloat, PositiveFloat, PositiveInt
from lrc.registry import SAMPLERS


@SAMPLERS.register("adaptive_fps")
class AdaptiveFpsSampler:
    """``dense_fps`` below ``threshold_s`` seconds, ``sparse_fps`` from it on; the count is clamped
    to ``[min_frames, max_frames]`` and a multiple of ``clip_len``; frames at segment midpoints.

    ``clip_len`` is set by the builder from the compressor; do not set it in YAML.

    Args:
        dense_fps: frames per second for videos shorter than ``threshold_s`` (motion matters); at least ``sparse_fps``.
        sparse_fps: frames per second for videos of ``threshold_s`` seconds or longer.
        threshold_s: the duration, in seconds, where sampling turns sparse.
        min_frames: fewest frames (moved up to a multiple of ``clip_len``).
        max_frames: most frames (moved down to a multiple of ``clip_len``).
        exact: decode exactly these frames; false (the default here, see the module docstring) lets the reader
            take a nearby key frame where one is closer to a sampled frame than to any other.
    """

    def __init__(self, dense_fps: PositiveFloat = 15.0, sparse_fps: PositiveFloat = 1.0,
                 threshold_s: NonNegativeFloat = 30.0, min_frames: PositiveInt = 64, max_frames: PositiveInt = 512,
                 clip_len: PositiveInt = 1, exact: bool = False):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        if dense_fps < sparse_fps:
            raise ValueError(f"adaptive_fps sampler: dense_fps ({dense_fps}) must be >= sparse_fps ({sparse_fps}); "
                             f"short videos are the ones sampled densely")
        self.dense_fps, self.sparse_fps, self.threshold_s = float(dense_fps), float(sparse_fps), float(threshold_s)
        self.min_frames, self.max_frames, self.clip_len = min_frames, max_frames, clip_len
        self.exact = bool(exact)
        # The effective bounds: min_frames rounded up, max_frames down, to multiples of clip_len.
        self.bounds = frame_bounds("adaptive_fps", min_frames, max_frames, clip_len, "the compressor's clip_len")

    def __repr__(self) -> str:
        return (f"AdaptiveFpsSampler(dense_fps={self.dense_fps}, sparse_fps={self.sparse_fps}, "
                f"threshold_s={self.threshold_s}, min_frames={self.min_frames}, max_frames={self.max_frames}, "
                f"clip_len={self.clip_len}, exact={self.exact})")

    def rate(self, duration: float) -> float:
        """Frames per second sampled from a video of ``duration`` seconds."""
        return self.dense_fps if duration < self.threshold_s else self.sparse_fps

    def count(self, duration: float) -> int:
        """How many frames a video of ``duration`` seconds gets."""
        return fit_count(round_half_up(duration * self.rate(duration)), *self.bounds, self.clip_len)

    def __call__(self, video_frames: int, fps: float, duration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (sorted, in ``[0, video_frames − 1]``; repeated when the video has fewer frames
        than the count) and their timestamps in seconds. ``duration`` defaults to ``video_frames / fps``."""
        video_frames, fps, duration = check_video("adaptive_fps", video_frames, fps, duration)
        indices = midpoint_indices(video_frames, fps, self.count(duration))
        return indices, indices.astype(np.float64) / fps
