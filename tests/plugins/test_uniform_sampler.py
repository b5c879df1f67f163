"""Uniform frame sampler: segment midpoints of [start, end], sorted in-range int64 indices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrc.registry import SAMPLERS
from lrc.train.build import instantiate
from lrc_plugins.samplers.uniform import UniformSampler

video_frames = st.integers(min_value=1, max_value=20_000)
fps = st.floats(min_value=0.5, max_value=120.0, allow_nan=False, allow_infinity=False)
num_frames = st.integers(min_value=1, max_value=600)
seconds = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1_000.0, allow_nan=False))


def _span(sampler: UniformSampler, n_video: int, rate: float) -> tuple[float, float]:
    lo = 0.0 if sampler.start is None else min(sampler.start * rate, float(n_video))
    hi = float(n_video) if sampler.end is None else min(sampler.end * rate, float(n_video))
    return lo, hi


@settings(max_examples=300, deadline=None)
@given(n_video=video_frames, rate=fps, n=num_frames, start=seconds, end=seconds)
def test_properties(n_video, rate, n, start, end):
    assume(start is None or end is None or start < end)
    sampler = UniformSampler(num_frames=n, start=start, end=end)
    lo, hi = _span(sampler, n_video, rate)
    assume(lo < hi)
    indices, timestamps = sampler(n_video, rate)

    assert indices.dtype == np.int64 and timestamps.dtype == np.float64
    assert indices.shape == timestamps.shape == (n,)
    assert indices.min() >= 0 and indices.max() <= n_video - 1
    assert np.all(np.diff(indices) >= 0)
    np.testing.assert_array_equal(timestamps, indices / rate)
    # frame i is the one on screen at the midpoint of segment i: index ≤ midpoint < index + 1
    mids = lo + (hi - lo) * (np.arange(n) + 0.5) / n
    assert np.all(indices <= mids + 1e-9)
    assert np.all(mids < indices + 1 + 1e-9)
    # all sampled frames lie inside the requested span
    assert indices.min() >= math.floor(lo) and indices.max() <= math.ceil(hi) - 1 + 1e-9


@settings(max_examples=200, deadline=None)
@given(n_video=video_frames, rate=fps, n=num_frames)
def test_whole_video_covers_evenly(n_video, rate, n):
    indices, _ = UniformSampler(num_frames=n)(n_video, rate, duration=n_video / rate)
    if n_video >= n:
        assert len(set(indices.tolist())) == n  # no repeats when the video is long enough
    else:
        assert set(indices.tolist()) == set(range(n_video))  # short video: every frame, repeated


def test_examples():
    idx, ts = UniformSampler(num_frames=8)(8, 4.0)
    assert idx.tolist() == list(range(8))  # the model card's get_index would give 0,1,2,3,4,4,5,6
    np.testing.assert_allclose(ts, np.arange(8) / 4.0)
    idx, _ = UniformSampler(num_frames=4)(100, 10.0)
    assert idx.tolist() == [12, 37, 62, 87]
    idx, _ = UniformSampler(num_frames=4)(2, 1.0)
    assert idx.tolist() == [0, 0, 1, 1]
    # 2 s .. 4 s of a 30 fps video = frame positions [60, 120): midpoints 67.5, 82.5, 97.5, 112.5
    idx, ts = UniformSampler(num_frames=4, start=2.0, end=4.0)(300, 30.0)
    assert idx.tolist() == [67, 82, 97, 112]
    np.testing.assert_allclose(ts, idx / 30.0)
    # an end bound past the video's end is clamped to the video
    idx, _ = UniformSampler(num_frames=2, end=100.0)(10, 1.0)
    assert idx.tolist() == [2, 7]


def test_registered_and_attributes():
    assert SAMPLERS.get("uniform") is UniformSampler
    assert UniformSampler(num_frames=16).num_frames == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=0), "num_frames"),
        (dict(num_frames=2.5), "num_frames"),
        (dict(num_frames=True), "num_frames"),
        (dict(start=3.0, end=3.0), "before end"),
        (dict(start=5.0, end=1.0), "before end"),
        (dict(start=-1.0), "start"),
        (dict(end=float("nan")), "end"),
    ],
)
def test_constructor_errors(kwargs, message):
    # types and ranges are checked by the builder against the annotations (lrc.constraints), the rest by the sampler
    with pytest.raises(ValueError, match=message):
        instantiate(SAMPLERS, {"name": "uniform", **kwargs})


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 30.0), "0 frames"),
        ((-3, 30.0), "frames"),
        ((10, 0.0), "fps"),
        ((10, -1.0), "fps"),
        ((10, float("inf")), "fps"),
        ((10, 30.0, 0.0), "duration"),
    ],
)
def test_call_errors(args, message):
    with pytest.raises(ValueError, match=message):
        UniformSampler(num_frames=4)(*args)


def test_start_past_the_end_of_the_video():
    with pytest.raises(ValueError, match="past the end"):
        UniformSampler(num_frames=4, start=20.0)(100, 10.0)
