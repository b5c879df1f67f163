"""Uniform frame sampling at segment midpoints (InternVideo2.5 model card, ``get_index``).

The span ``[start, end]`` (seconds; the whole video by default) is split into ``num_frames`` equal
segments and the frame shown at the midpoint of each segment is taken (REFERENCE.md, "Frame
sampling"). Time is continuous here: frame ``k`` is on screen during ``[k/fps, (k+1)/fps)``, so the
whole video spans frame positions ``[0, video_frames)`` and sample ``i`` is

    index_i = floor(lo + (hi − lo)·(i + ½) / num_frames),   lo = start·fps,  hi = end·fps

with ``lo``/``hi`` clamped to the video. This differs slightly from the model card, which measures
the span as ``[round(start·fps), last_frame]`` and rounds each segment offset separately; that
version repeats a frame even when the video has exactly ``num_frames`` frames (8 of 8 frames gives
0,1,2,3,4,4,5,6), while this one returns 0..7. A video shorter than ``num_frames`` gives repeated,
still sorted indices. Timestamps are the frame start times ``index / fps``.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from lrc.ops import is_int
from lrc.registry import SAMPLERS


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_video(sampler: str, video_frames: int, fps: float, duration: float | None) -> tuple[int, float, float]:
    """Validate a sampler call's arguments (shared by every sampler in this package).

    Returns ``(video_frames, fps, duration)`` as int, float, float; ``duration`` defaults to
    ``video_frames / fps``. Error messages start with ``"{sampler} sampler:"``.
    """
    if not is_int(video_frames) or video_frames < 1:
        raise ValueError(f"{sampler} sampler: the video has {video_frames!r} frames; need at least 1 (is the file empty or unreadable?)")
    if not _is_real(fps) or fps <= 0:
        raise ValueError(f"{sampler} sampler: fps must be a finite number > 0, got {fps!r}")
    if duration is not None and (not _is_real(duration) or duration <= 0):
        raise ValueError(f"{sampler} sampler: duration must be a finite number of seconds > 0 or None, got {duration!r}")
    video_frames, fps = int(video_frames), float(fps)
    return video_frames, fps, video_frames / fps if duration is None else float(duration)


def midpoint_indices(video_frames: int, fps: float, num_frames: int,
                     start: float | None = None, end: float | None = None) -> np.ndarray:
    """Indices (int64, sorted, in ``[0, video_frames − 1]``) of the frames at the midpoints of
    ``num_frames`` equal segments of ``[start, end]`` seconds (the module docstring's formula).

    ``video_frames`` and ``fps`` are assumed valid (see :func:`check_video`); ``start``/``end``
    default to the whole video and are clamped to it.
    """
    if not is_int(num_frames) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    lo = 0.0 if start is None else min(start * fps, float(video_frames))
    hi = float(video_frames) if end is None else min(end * fps, float(video_frames))
    if lo >= hi:
        raise ValueError(
            f"start bound {start} s is at or past the end of the span (end bound {end} s; the video is "
            f"{video_frames} frames at {fps:g} fps = {video_frames / fps:.3f} s); lower start or drop it."
        )
    midpoints = lo + (hi - lo) * (np.arange(num_frames, dtype=np.float64) + 0.5) / num_frames
    return np.clip(np.floor(midpoints), 0, video_frames - 1).astype(np.int64)


@SAMPLERS.register("uniform")
class UniformSampler:
    """``num_frames`` frames at the midpoints of equal segments of ``[start, end]`` seconds.

    ``__call__(video_frames, fps, duration=None) -> (indices int64, timestamps float64 seconds)``;
    ``video_frames`` is the video's frame count, ``num_frames`` (constructor) how many to sample.
    """

    def __init__(self, num_frames: int = 8, start: float | None = None, end: float | None = None):
        if not is_int(num_frames) or num_frames < 1:
            raise ValueError(f"uniform sampler: num_frames must be an integer >= 1, got {num_frames!r}")
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and (not _is_real(bound) or bound < 0):
                raise ValueError(f"uniform sampler: {name} must be a finite number of seconds >= 0 or null, got {bound!r}")
        if start is not None and end is not None and start >= end:
            raise ValueError(f"uniform sampler: start ({start} s) must be before end ({end} s)")
        self.num_frames = int(num_frames)
        self.start = None if start is None else float(start)
        self.end = None if end is None else float(end)

    def __repr__(self) -> str:
        return f"UniformSampler(num_frames={self.num_frames}, start={self.start}, end={self.end})"

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
