"""About one frame per second, in steps of ``multiple`` frames: the InternVideo2.5 model card's
``get_num_frames_by_duration`` and VideoChat-Flash's ``dynamic_fps1`` rule (the released code's frame
sampling):

    count = multiple · floor(duration / multiple),  clamped to [min_frames, max_frames]

with the model card's defaults ``multiple=4``, ``[128, 512]`` (the finetuning recipe uses 8 and
``[64, 256]``): 100 s → 100 → 128, 300 s → 300, 301 s → 300, 1000 s → 512. Frames are then taken at
segment midpoints (``lrc.data.sampling.midpoint_indices``), as in the card's ``get_index``.

The count must also be a multiple of the compressor's ``clip_len``, so the rule's step is
``lcm(multiple, clip_len)`` (``multiple`` itself whenever ``clip_len`` divides it, as in both
recipes: 4 or 8 with HiCo's clip of 4). The bounds are moved inward to multiples of that step
(``min_frames`` up, ``max_frames`` down), so the count stays within the bounds as written; the
constructor raises if no multiple lies between them.

Approximate frames by default (``exact: false``): for a long video sampled at about one frame per second or
sparser, a frame moved by less than half the sampling interval shows the same scene, and the reader takes a key frame instead of
a sampled frame only where the key frame lies closer to it than to any other sampled frame, so the frames stay
distinct, in order and evenly spread; their true indices and timestamps go to the model and the task targets
(docs/data.md, "Reading frames"). On long videos that cuts decoding several-fold (docs/benchmarks.md); where
sampling is dense (short videos) nearly every frame is read exactly anyway. ``exact: true`` gives exact frames.
"""

from __future__ import annotations

import math

import numpy as np

from lrc.data.sampling import check_video, fit_count, frame_bounds, midpoint_indices
from lrc.constraints import PositiveInt
from lrc.registry import SAMPLERS


@SAMPLERS.register("duration")
class DurationSampler:
    """``multiple · floor(duration / multiple)`` frames (≈ 1 fps), clamped to ``[min_frames,
    max_frames]``, a multiple of ``lcm(multiple, clip_len)``; frames at segment midpoints.

    ``clip_len`` is set by the builder from the compressor; do not set it in YAML.

    Args:
        multiple: frames come in multiples of it: ``multiple · floor(duration / multiple)`` (≈ 1 fps; the model
            card's 4, finetuning used 8).
        min_frames: fewest frames (the model card's 128; finetuning used 64).
        max_frames: most frames (the model card's 512; finetuning used 256).
        exact: decode exactly these frames; false (the default here, see the module docstring) lets the reader
            take a nearby key frame where one is closer to a sampled frame than to any other.
    """

    def __init__(self, multiple: PositiveInt = 4, min_frames: PositiveInt = 128, max_frames: PositiveInt = 512,
                 clip_len: PositiveInt = 1, exact: bool = False):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        self.multiple, self.min_frames, self.max_frames, self.clip_len = multiple, min_frames, max_frames, clip_len
        self.exact = bool(exact)
        self.step = math.lcm(multiple, clip_len)
        # The effective bounds: min_frames rounded up, max_frames down, to multiples of the step.
        self.bounds = frame_bounds("duration", min_frames, max_frames, self.step,
                                   f"lcm(multiple={multiple}, compressor clip_len={clip_len})")

    def __repr__(self) -> str:
        return (f"DurationSampler(multiple={self.multiple}, min_frames={self.min_frames}, "
                f"max_frames={self.max_frames}, clip_len={self.clip_len}, exact={self.exact})")

    def count(self, duration: float) -> int:
        """How many frames a video of ``duration`` seconds gets."""
        return fit_count(self.step * math.floor(duration / self.step), *self.bounds, self.step)

    def __call__(self, video_frames: int, fps: float, duration: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices (sorted, in ``[0, video_frames − 1]``; repeated when the video has fewer frames
        than the count) and their timestamps in seconds. ``duration`` defaults to ``video_frames / fps``."""
        video_frames, fps, duration = check_video("duration", video_frames, fps, duration)
        indices = midpoint_indices(video_frames, fps, self.count(duration))
        return indices, indices.astype(np.float64) / fps
