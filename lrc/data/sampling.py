"""The toolkit for sampler authors: the checks and the frame arithmetic lrc's samplers share.

A sampler plugin (protocol: :class:`lrc.protocols.Sampler`) turns a video's frame count, frame rate
and duration into the indices of the frames to decode and their timestamps. lrc's four built-ins
(``uniform``, ``fixed_fps``, ``adaptive_fps``, ``duration``; plugins/samplers/) are built from the
functions here, and a sampler in another package can use them the same way:

* :func:`check_video` validates a call's arguments, with errors that start ``"<sampler> sampler:"``;
* :func:`midpoint_indices` takes ``num_frames`` frames at the midpoints of equal segments of a span;
* :func:`frame_bounds`, :func:`fit_count` and :func:`round_half_up` decide a frame count that is a
  multiple of the compressor's ``clip_len`` (HiCo compresses clips of ``clip_len`` frames) and stays
  within ``[min_frames, max_frames]`` as written.

Time is continuous here: frame ``k`` is on screen during ``[k/fps, (k+1)/fps)``, so the whole video
spans frame positions ``[0, video_frames)`` and a frame's timestamp is its start time ``k / fps``.

This module is part of lrc's core and imports no plugin.
"""

from __future__ import annotations

import math

import numpy as np

from lrc.ops import is_int, is_real


def check_video(sampler: str, video_frames: int, fps: float, duration: float | None) -> tuple[int, float, float]:
    """Validate a sampler call's arguments.

    Returns ``(video_frames, fps, duration)`` as int, float, float; ``duration`` defaults to
    ``video_frames / fps``. Error messages start with ``"{sampler} sampler:"``.
    """
    if not is_int(video_frames) or video_frames < 1:
        raise ValueError(f"{sampler} sampler: the video has {video_frames!r} frames; need at least 1 (is the file empty or unreadable?)")
    if not is_real(fps) or fps <= 0:
        raise ValueError(f"{sampler} sampler: fps must be a finite number > 0, got {fps!r}")
    if duration is not None and (not is_real(duration) or duration <= 0):
        raise ValueError(f"{sampler} sampler: duration must be a finite number of seconds > 0 or None, got {duration!r}")
    video_frames, fps = int(video_frames), float(fps)
    return video_frames, fps, video_frames / fps if duration is None else float(duration)


def midpoint_indices(video_frames: int, fps: float, num_frames: int,
                     start: float | None = None, end: float | None = None) -> np.ndarray:
    """Indices (int64, sorted, in ``[0, video_frames − 1]``) of the frames at the midpoints of
    ``num_frames`` equal segments of ``[start, end]`` seconds (InternVideo2.5 model card, ``get_index``):

        index_i = floor(lo + (hi − lo)·(i + ½) / num_frames),   lo = start·fps,  hi = end·fps

    with ``lo``/``hi`` clamped to the video. ``video_frames`` and ``fps`` are assumed valid (see
    :func:`check_video`); ``start``/``end`` default to the whole video. A video shorter than
    ``num_frames`` gives repeated, still sorted indices. Errors carry no sampler name: the caller
    adds its own.
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


def frame_bounds(sampler: str, min_frames: int, max_frames: int, step: int, step_is: str) -> tuple[int, int]:
    """``[min_frames, max_frames]`` shrunk to multiples of ``step``: ``(lo, hi)``, both multiples.

    ``step_is`` says where the step comes from, for the error message (e.g. "the compressor's clip_len").
    Errors start with ``"{sampler} sampler:"``.
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
    """``count`` rounded down to a multiple of ``step``, then clamped to ``[lo, hi]`` (multiples of ``step``,
    as :func:`frame_bounds` returns them)."""
    return min(max(count // step * step, lo), hi)
