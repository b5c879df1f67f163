"""Fixed-rate frame sampling: about ``fps`` frames per second of video, within frame-count bounds.

The count is decided from the video's duration, then the frames are taken at segment midpoints
exactly as the uniform sampler takes them (``lrc.data.sampling.midpoint_indices``):

    count = round(duration · fps)                       (halves round up)
    count = clamp(count, min_frames, max_frames)
    count rounded down to a multiple of clip_len        (the compressor merges clips of clip_len frames)

Clamping vs. multiples: the bounds themselves are first moved inward to multiples of ``clip_len``
(``min_frames`` up, ``max_frames`` down), so the count is always a multiple of ``clip_len`` *and*
inside the bounds as written; if no multiple lies between them the constructor says so. With
``clip_len = 1`` (the default) this is plain clamping. ``frame_bounds`` and ``fit_count``
(lrc/data/sampling.py) are shared with the adaptive-fps and duration samplers.
"""

from __future__ import annotations

import numpy as np

from lrc.data.sampling import check_video, fit_count, frame_bounds, midpoint_indices, round_half_up
from lrc.constraints import PositiveFloat, PositiveInt
from lrc.registry import SAMPLERS


@SAMPLERS.register("fixed_fps")
class FixedFpsSampler:
    """``round(duration · fps)`` frames, clamped to ``[min_frames, max_frames]`` and a multiple of
    ``clip_len``, at segment midpoints.

    ``clip_len`` is set by the builder from the compressor; do not set it in YAML.

    Args:
        fps: frames per second of video: ``round(duration · fps)`` frames (halves up).
        min_frames: fewest frames (moved up to a multiple of ``clip_len``); shorter videos repeat frames.
        max_frames: most frames (moved down to a multiple of ``clip_len``).
        exact: decode exactly these frames (true); false lets the reader take a nearby key frame where one is
            closer to a sampled frame than to any other (docs/data.md, "Reading frames").
    """

    def __init__(self, fps: PositiveFloat = 1.0, min_frames: PositiveInt = 4, max_frames: PositiveInt = 512,
                 clip_len: PositiveInt = 1, exact: bool = True):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        self.fps = float(fps)
        self.exact = bool(exact)
        self.min_frames, self.max_frames, self.clip_len = min_frames, max_frames, clip_len
        # The effective bounds: min_frames rounded up, max_frames down, to multiples of clip_len.
        self.bounds = frame_bounds("fixed_fps", min_frames, max_frames, clip_len, "the compressor's clip_len")

    def __repr__(self) -> str:
        return (f"FixedFpsSampler(fps={self.fps}, min_frames={self.min_frames}, max_frames={self.max_frames}, "
                f"clip_len={self.clip_len}, exact={self.exact})")

    def count(self, duration: float) -> int:
        """How many frames a video of ``duration`` seconds gets."""
        return fit_count(round_half_up(duration * self.fps), *self.bounds, self.clip_len)

    def __call__(self, video_frames: int, fps: float, duration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (sorted, in ``[0, video_frames − 1]``; repeated when the video has fewer frames
        than the count) and their timestamps in seconds. ``duration`` defaults to ``video_frames / fps``."""
        video_frames, fps, duration = check_video("fixed_fps", video_frames, fps, duration)
        indices = midpoint_indices(video_frames, fps, self.count(duration))
        return indices, indices.astype(np.float64) / fps
