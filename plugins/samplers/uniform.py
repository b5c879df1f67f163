"""Uniform frame sampling at segment midpoints (InternVideo2.5 model card, ``get_index``).

The span ``[start, end]`` (seconds; the whole video by default) is split into ``num_frames`` equal
segments and the frame shown at the midpoint of each segment is taken (the released InternVideo2.5 code's frame
sampling). Time is continuous here: frame ``k`` is on screen during ``[k/fps, (k+1)/fps)``, so the
whole video spans frame positions ``[0, video_frames)`` and sample ``i`` is

    index_i = floor(lo + (hi − lo)·(i + ½) / num_frames),   lo = start·fps,  hi = end·fps

with ``lo``/``hi`` clamped to the video. This differs slightly from the model card, which measures
the span as ``[round(start·fps), last_frame]`` and rounds each segment offset separately; that
version repeats a frame even when the video has exactly ``num_frames`` frames (8 of 8 frames gives
0,1,2,3,4,4,5,6), while this one returns 0..7. A video shorter than ``num_frames`` gives repeated,
still sorted indices. Timestamps are the frame start times ``index / fps``. The arithmetic is
``lrc.data.sampling.midpoint_indices``, which the other samplers share.
"""

from __future__ import annotations

import numpy as np

from lrc.data.sampling import check_video, midpoint_indices
from lrc.constraints import NonNegativeFloat, PositiveInt
from lrc.registry import SAMPLERS


@SAMPLERS.register("uniform")
class UniformSampler:
    """``num_frames`` frames at the midpoints of equal segments of ``[start, end]`` seconds.

    ``__call__(video_frames, fps, duration=None) -> (indices int64, timestamps float64 seconds)``;
    ``video_frames`` is the video's frame count, ``num_frames`` (constructor) how many to sample.

    Args:
        num_frames: frames to sample, at the midpoints of ``num_frames`` equal segments; a multiple of the
            compressor's ``clip_len``. Shorter videos repeat frames.
        start: where the segments start, in seconds (null: the video's start).
        end: where the segments end, in seconds (null: the video's end).
        exact: decode exactly these frames (true); false lets the reader take a nearby key frame where one is
            closer to a sampled frame than to any other (docs/data.md, "Reading frames").
    """

    def __init__(self, num_frames: PositiveInt = 8, start: NonNegativeFloat | None = None,
                 end: NonNegativeFloat | None = None, exact: bool = True):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        if start is not None and end is not None and start >= end:
            raise ValueError(f"uniform sampler: start ({start} s) must be before end ({end} s)")
        self.num_frames = int(num_frames)
        self.exact = bool(exact)
        self.start = None if start is None else float(start)
        self.end = None if end is None else float(end)

    def __repr__(self) -> str:
        return f"UniformSampler(num_frames={self.num_frames}, start={self.start}, end={self.end}, exact={self.exact})"

    def __call__(self, video_frames: int, fps: float, duration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (sorted, in ``[0, video_frames − 1]``) and their timestamps in seconds.

        ``duration`` is part of the sampler protocol (adaptive samplers choose a frame count from
        it); the uniform span is taken from ``video_frames`` and ``fps``, and ``duration`` is only
        checked.
        """
        video_frames, fps, _ = check_video("uniform", video_frames, fps, duration)
        try:
            indices = midpoint_indices(video_frames, fps, self.num_frames, self.start, self.end)
        except ValueError as exc:
            raise ValueError(f"uniform sampler: {exc}") from None
        timestamps = indices.astype(np.float64) / fps
        return indices, timestamps
