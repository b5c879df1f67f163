"""Fixed-rate frame sampling: about ``fps`` frames per second of video, within frame-count bounds.

The count is decided from the video's duration, then the frames are taken at segment midpoints
exactly as the uniform sampler takes them (``uniform.midpoint_indices``; REFERENCE.md, "Frame
sampling"):

    count = round(duration · fps)                       (halves round up)
    count = clamp(count, min_frames, max_frames)
    count rounded down to a multiple of clip_len        (the compressor merges clips of clip_len frames)

Clamping vs. multiples: the bounds themselves are first moved inward to multiples of ``clip_len``
(``min_frames`` up, ``max_frames`` down), so the count is always a multiple of ``clip_len`` *and*
inside the bounds as written; if no multiple lies between them the constructor says so. With
``clip_len = 1`` (the default) this is plain clamping. ``frame_bounds`` and ``fit_count`` are shared
with the adaptive-fps and duration samplers.
"""

from __future__ import annotations

import math

import numpy as np

from lrc.ops import is_int
from lrc.registry import SAMPLERS
from lrc_plugins.samplers.uniform import _is_real, check_video, midpoint_indices


def frame_bounds(sampler: str, min_frames: int, max_frames: int, step: int, step_is: str) -> tuple[int, int]:
    """``[min_frames, max_frames]`` shrunk to multiples of ``step``: ``(lo, hi)``, both multiples.

    ``step_is`` says where the step comes from, for the error message (e.g. "the compressor's clip_len").
    """
    for name, value in (("min_frames", min_frames), ("max_frames", max_frames)):
        if not is_int(value) or value < 1:
            raise ValueError(f"{sampler} sampler: {name} must be an integer >= 1, got {value!r}")
    if min_frames > max_frames:
        raise ValueError(f"{sampler} sampler: min_frames ({min_frames}) must be <= max_frames ({max_frames})")
    if not is_int(step) or step < 1:
        raise ValueError(f"{sampler} sampler: the frame-count step ({step_is}) must be an integer >= 1, got {step!r}")
    lo = -(-min_frames // step) * step
    hi = max_frames // step * step
    if lo > hi:
        raise ValueError(
            f"{sampler} sampler: no multiple of {step} ({step_is}) lies in [min_frames, max_frames] = "
            f"[{min_frames}, {max_frames}], and the frame count must be one; set max_frames to at least {lo}."
        )
    return lo, hi


def round_half_up(x: float) -> int:
    """``x`` (>= 0) to the nearest integer, halves up; exact, unlike ``floor(x + 0.5)`` near halves."""
    whole = math.floor(x)
    return whole + (x - whole >= 0.5)


def fit_count(count: int, lo: int, hi: int, step: int) -> int:
    """``count`` rounded down to a multiple of ``step``, then clamped to ``[lo, hi]`` (multiples of ``step``)."""
    return min(max(count // step * step, lo), hi)


@SAMPLERS.register("fixed_fps")
class FixedFpsSampler:
    """``round(duration · fps)`` frames, clamped to ``[min_frames, max_frames]`` and a multiple of
    ``clip_len``, at segment midpoints.

    ``clip_len`` is set by the builder from the compressor; do not set it in YAML.
    """

    def __init__(self, fps: float = 1.0, min_frames: int = 4, max_frames: int = 512, clip_len: int = 1):
        if not _is_real(fps) or fps <= 0:
            raise ValueError(f"fixed_fps sampler: fps must be a finite number > 0 (frames per second of video), got {fps!r}")
        self.fps = float(fps)
        self.min_frames, self.max_frames, self.clip_len = min_frames, max_frames, clip_len
        # The effective bounds: min_frames rounded up, max_frames down, to multiples of clip_len.
        self.bounds = frame_bounds("fixed_fps", min_frames, max_frames, clip_len, "the compressor's clip_len")

    def __repr__(self) -> str:
        return (f"FixedFpsSampler(fps={self.fps}, min_frames={self.min_frames}, max_frames={self.max_frames}, "
                f"clip_len={self.clip_len})")

    def count(self, duration: float) -> int:
        """How many frames a video of ``duration`` seconds gets."""
        return fit_count(round_half_up(duration * self.fps), *self.bounds, self.clip_len)

    def __call__(self, video_frames: int, fps: float, duration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (sorted, in ``[0, video_frames − 1]``; repeated when the video has fewer frames
        than the count) and their timestamps in seconds. ``duration`` defaults to ``video_frames / fps``."""
        video_frames, fps, duration = check_video("fixed_fps", video_frames, fps, duration)
        indices = midpoint_indices(video_frames, fps, self.count(duration))
        return indices, indices.astype(np.float64) / fps
