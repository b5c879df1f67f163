"""lrc/data/sampling.py, the sampler authors' toolkit: the arithmetic every built-in sampler shares."""

import numpy as np
import pytest

from lrc.data.sampling import check_video, fit_count, frame_bounds, midpoint_indices, round_half_up


def test_midpoint_indices_take_segment_midpoints_and_repeat_for_short_videos():
    assert midpoint_indices(8, 1.0, 8).tolist() == list(range(8))  # 8 of 8 frames: each once
    assert midpoint_indices(100, 10.0, 4).tolist() == [12, 37, 62, 87]
    assert midpoint_indices(3, 1.0, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert midpoint_indices(100, 10.0, 2, start=5.0).tolist() == [62, 87]  # the span [5 s, 10 s]
    assert midpoint_indices(100, 10.0, 2).dtype == np.int64
    with pytest.raises(ValueError, match="past the end"):
        midpoint_indices(100, 10.0, 2, start=20.0)


def test_check_video_fills_in_the_duration_and_names_the_sampler():
    assert check_video("mine", np.int64(30), 15, None) == (30, 15.0, 2.0)
    with pytest.raises(ValueError, match="^mine sampler: fps must be a finite number > 0"):
        check_video("mine", 30, float("nan"), None)
    with pytest.raises(ValueError, match="^mine sampler: the video has 0 frames"):
        check_video("mine", 0, 30.0, None)


def test_frame_bounds_and_fit_count_keep_a_multiple_of_the_step_within_the_bounds():
    assert frame_bounds("mine", 5, 30, 4, "clip_len") == (8, 28)
    assert [fit_count(c, 8, 28, 4) for c in (1, 9, 13, 100)] == [8, 8, 12, 28]
    with pytest.raises(ValueError, match=r"no multiple of 8 \(clip_len\) lies in \[min_frames, max_frames\] = \[1, 7\]"):
        frame_bounds("mine", 1, 7, 8, "clip_len")


def test_round_half_up_is_exact_at_halves():
    assert [round_half_up(x) for x in (0.49999999999999994, 0.5, 1.5, 2.5, 2.4999)] == [0, 1, 2, 3, 2]
