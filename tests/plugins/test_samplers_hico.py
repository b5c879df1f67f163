"""Duration-driven samplers (fixed_fps, adaptive_fps, duration): the frame count obeys its rule exactly
and is a multiple of the compressor's clip_len; frames are the uniform sampler's segment midpoints.

The expected counts below are written independently of the plugins: they list every allowed count
(multiples of the step inside [min_frames, max_frames]) and pick the largest not above the rule's
clamped count, or the smallest when none is.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrc.train.build import build_sampler, instantiate
from lrc.config import ConfigError, load_config, validate
from lrc.registry import SAMPLERS
from lrc_plugins.samplers.adaptive_fps import AdaptiveFpsSampler
from lrc_plugins.samplers.duration import DurationSampler
from lrc_plugins.samplers.fixed_fps import FixedFpsSampler
from lrc_plugins.samplers.uniform import UniformSampler

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"

durations = st.floats(min_value=0.5, max_value=3 * 3600.0, allow_nan=False, allow_infinity=False)
video_fps = st.floats(min_value=1.0, max_value=60.0, allow_nan=False, allow_infinity=False)
clip_lens = st.sampled_from([1, 2, 3, 4, 8])
min_frames = st.integers(min_value=1, max_value=128)
extra_frames = st.integers(min_value=0, max_value=600)  # max_frames = min_frames + extra


def round_half_up(x: float) -> int:
    whole = int(x)
    return whole + 1 if x - whole >= 0.5 else whole


def expected_count(raw: int, lo: int, hi: int, step: int) -> int | None:
    """The allowed count for a rule's raw count, or None when no multiple of step lies in [lo, hi]."""
    allowed = [n for n in range(step, hi + 1, step) if n >= lo]
    if not allowed:
        return None
    target = min(max(raw, lo), hi)
    below = [n for n in allowed if n <= target]
    return below[-1] if below else allowed[0]


def check_output(sampler, n_video: int, rate: float, duration: float, count: int) -> None:
    indices, timestamps = sampler(n_video, rate, duration)
    assert indices.dtype == np.int64 and timestamps.dtype == np.float64
    assert indices.shape == timestamps.shape == (count,)
    assert indices.min() >= 0 and indices.max() <= n_video - 1
    assert np.all(np.diff(indices) >= 0)
    np.testing.assert_array_equal(timestamps, indices / rate)
    # once the count is decided, the frames are exactly the uniform sampler's midpoints
    np.testing.assert_array_equal(indices, UniformSampler(num_frames=count)(n_video, rate)[0])


def video(duration: float, rate: float) -> int:
    return max(1, round(duration * rate))


@settings(max_examples=300, deadline=None)
@given(duration=durations, rate=video_fps, fps=st.floats(min_value=0.05, max_value=30.0), lo=min_frames,
       extra=extra_frames, clip_len=clip_lens)
def test_fixed_fps_count_rule(duration, rate, fps, lo, extra, clip_len):
    hi = lo + extra
    count = expected_count(round_half_up(duration * fps), lo, hi, clip_len)
    if count is None:
        with pytest.raises(ValueError, match="no multiple"):
            FixedFpsSampler(fps=fps, min_frames=lo, max_frames=hi, clip_len=clip_len)
        return
    sampler = FixedFpsSampler(fps=fps, min_frames=lo, max_frames=hi, clip_len=clip_len)
    assert count % clip_len == 0 and lo <= count <= hi
    check_output(sampler, video(duration, rate), rate, duration, count)


@settings(max_examples=300, deadline=None)
@given(duration=durations, rate=video_fps, dense=st.floats(min_value=1.0, max_value=60.0),
       sparse_share=st.floats(min_value=0.01, max_value=1.0), threshold=st.floats(min_value=0.0, max_value=600.0),
       lo=min_frames, extra=extra_frames, clip_len=clip_lens)
def test_adaptive_fps_count_rule(duration, rate, dense, sparse_share, threshold, lo, extra, clip_len):
    hi, sparse = lo + extra, dense * sparse_share
    fps = dense if duration < threshold else sparse
    count = expected_count(round_half_up(duration * fps), lo, hi, clip_len)
    kwargs = dict(dense_fps=dense, sparse_fps=sparse, threshold_s=threshold, min_frames=lo, max_frames=hi,
                  clip_len=clip_len)
    if count is None:
        with pytest.raises(ValueError, match="no multiple"):
            AdaptiveFpsSampler(**kwargs)
        return
    assert count % clip_len == 0 and lo <= count <= hi
    check_output(AdaptiveFpsSampler(**kwargs), video(duration, rate), rate, duration, count)


@settings(max_examples=300, deadline=None)
@given(duration=durations, rate=video_fps, multiple=st.integers(min_value=1, max_value=16), lo=min_frames,
       extra=extra_frames, clip_len=clip_lens)
def test_duration_count_rule(duration, rate, multiple, lo, extra, clip_len):
    hi = lo + extra
    raw = multiple * math.floor(duration / multiple)  # VideoChat-Flash dynamic_fps1 / model card
    step = multiple * clip_len // math.gcd(multiple, clip_len)
    count = expected_count(raw, lo, hi, step)
    if count is None:
        with pytest.raises(ValueError, match="no multiple"):
            DurationSampler(multiple=multiple, min_frames=lo, max_frames=hi, clip_len=clip_len)
        return
    assert count % clip_len == 0 and count % multiple == 0 and lo <= count <= hi
    check_output(DurationSampler(multiple=multiple, min_frames=lo, max_frames=hi, clip_len=clip_len),
                 video(duration, rate), rate, duration, count)


@settings(max_examples=100, deadline=None)
@given(n_video=st.integers(min_value=1, max_value=200_000), rate=video_fps)
def test_duration_defaults_to_frames_over_fps(n_video, rate):
    for sampler in (FixedFpsSampler(), AdaptiveFpsSampler(), DurationSampler()):
        implicit, explicit = sampler(n_video, rate), sampler(n_video, rate, n_video / rate)
        np.testing.assert_array_equal(implicit[0], explicit[0])


# --- worked examples -------------------------------------------------------------------------------

@pytest.mark.parametrize("clip_len", [1, 4])
@pytest.mark.parametrize("seconds,frames", [(100, 128), (300, 300), (1000, 512), (301, 300), (2, 128), (512, 512)])
def test_duration_reproduces_the_model_card(seconds, frames, clip_len):
    sampler = DurationSampler(clip_len=clip_len)  # multiple=4, [128, 512]
    assert sampler.count(seconds) == frames
    indices, timestamps = sampler(seconds * 30, 30.0)
    assert len(indices) == frames
    if frames == seconds:  # one frame per second, the one on screen mid-second: frame 30·i + 15
        np.testing.assert_array_equal(indices, 30 * np.arange(frames) + 15)
        np.testing.assert_allclose(timestamps, np.arange(frames) + 0.5)


def test_duration_finetuning_recipe_and_clip_len_step():
    sampler = DurationSampler(multiple=8, min_frames=64, max_frames=256)
    assert [sampler.count(s) for s in (30, 100, 199, 1000)] == [64, 96, 192, 256]
    # clip_len 3 with multiple 4: steps of 12, bounds moved inward to 132 and 504
    sampler = DurationSampler(clip_len=3)
    assert sampler.bounds == (132, 504)
    assert [sampler.count(s) for s in (100, 300, 1000)] == [132, 300, 504]


def test_adaptive_worked_examples():
    sampler = AdaptiveFpsSampler()  # dense 15 fps below 30 s, sparse 1 fps, [64, 512]
    indices, timestamps = sampler(300, 30.0)  # 10 s at 30 fps: dense, 150 frames, one every 2 frames
    assert len(indices) == 150
    np.testing.assert_array_equal(indices, 2 * np.arange(150) + 1)
    np.testing.assert_allclose(timestamps, (2 * np.arange(150) + 1) / 30.0)
    assert len(sampler(20 * 60 * 30, 30.0)[0]) == 512  # 20 minutes: 1200 sparse frames, capped
    assert len(sampler(40 * 30, 30.0)[0]) == 64  # 40 s: 40 sparse frames, clamped up
    assert sampler.rate(29.9) == 15.0 and sampler.rate(30.0) == 1.0  # the threshold itself is sparse
    assert AdaptiveFpsSampler(clip_len=4).count(10.0) == 148  # 150 rounded down to a multiple of 4


def test_fixed_fps_worked_examples():
    assert FixedFpsSampler(fps=2.0).count(10.0) == 20
    assert FixedFpsSampler(fps=1.0).count(2.5) == 4  # clamped up to min_frames
    assert FixedFpsSampler(fps=1.0, min_frames=1).count(2.5) == 3  # halves round up
    assert FixedFpsSampler(fps=1.0, clip_len=4).count(10.0) == 8
    sampler = FixedFpsSampler(fps=1.0, min_frames=6, max_frames=30, clip_len=4)  # bounds move inward
    assert sampler.bounds == (8, 28)
    assert [sampler.count(s) for s in (1, 13, 100)] == [8, 12, 28]


@pytest.mark.parametrize("sampler", [FixedFpsSampler(), AdaptiveFpsSampler(), DurationSampler()], ids=repr)
def test_tiny_video_repeats_frames(sampler):
    indices, timestamps = sampler(1, 1.0)
    assert len(indices) == sampler.bounds[0] and not indices.any() and not timestamps.any()
    indices, _ = sampler(3, 1.0)
    assert set(indices.tolist()) == {0, 1, 2} and np.all(np.diff(indices) >= 0)


# --- registry, builder and config ------------------------------------------------------------------

@pytest.mark.parametrize("name,cls", [("fixed_fps", FixedFpsSampler), ("adaptive_fps", AdaptiveFpsSampler),
                                      ("duration", DurationSampler)])
def test_builder_passes_clip_len(name, cls):
    assert SAMPLERS.get(name) is cls
    # the demo's uniform sampler sets num_frames; switching plugin drops it (these do not accept it)
    cfg = validate(load_config(DEMO, [f"data.sampler={{name: {name}, min_frames: 8, max_frames: 32}}"]))
    assert "num_frames" not in cfg["data"]["sampler"]
    sampler = build_sampler(cfg, clip_len=4)
    assert isinstance(sampler, cls) and sampler.clip_len == 4
    assert (sampler.min_frames, sampler.max_frames) == (8, 32)
    assert sampler.count(10_000.0) == 32 and all(sampler.count(s) % 4 == 0 for s in (0.5, 7.0, 13.0, 21.0))


@pytest.mark.parametrize("name", ["fixed_fps", "adaptive_fps", "duration"])
def test_clip_len_in_yaml_is_rejected(name):
    with pytest.raises(ConfigError, match="set by lrc"):
        validate(load_config(DEMO, [f"data.sampler.name={name}", "data.sampler.clip_len=4"]))


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (FixedFpsSampler, dict(fps=0.0), "fps"),
        (FixedFpsSampler, dict(fps=float("inf")), "fps"),
        (FixedFpsSampler, dict(min_frames=0), "min_frames"),
        (FixedFpsSampler, dict(min_frames=2.5), "min_frames"),
        (FixedFpsSampler, dict(max_frames=True), "max_frames"),
        (FixedFpsSampler, dict(min_frames=10, max_frames=5), "min_frames"),
        (FixedFpsSampler, dict(min_frames=5, max_frames=7, clip_len=4), "no multiple of 4"),
        (FixedFpsSampler, dict(max_frames=3, min_frames=1, clip_len=4), "max_frames to at least 4"),
        (FixedFpsSampler, dict(clip_len=0), "clip_len"),
        (AdaptiveFpsSampler, dict(dense_fps=1.0, sparse_fps=2.0), "dense_fps"),
        (AdaptiveFpsSampler, dict(sparse_fps=0.0), "sparse_fps"),
        (AdaptiveFpsSampler, dict(dense_fps=float("nan")), "dense_fps"),
        (AdaptiveFpsSampler, dict(threshold_s=-1.0), "threshold_s"),
        (AdaptiveFpsSampler, dict(min_frames=600), "min_frames"),
        (AdaptiveFpsSampler, dict(min_frames=65, max_frames=70, clip_len=8), "no multiple of 8"),
        (DurationSampler, dict(multiple=0), "multiple"),
        (DurationSampler, dict(multiple=4.0), "multiple"),
        (DurationSampler, dict(clip_len=0), "clip_len"),
        (DurationSampler, dict(min_frames=129, max_frames=130), "no multiple of 4"),
        (DurationSampler, dict(min_frames=100, max_frames=107, clip_len=3), r"lcm\(multiple=4"),
    ],
)
def test_constructor_errors(cls, kwargs, message):
    # types and ranges are checked by the builder against the annotations (lrc.constraints), the rest by the sampler
    name = next(n for n in SAMPLERS.names() if SAMPLERS.get(n) is cls)
    with pytest.raises(ValueError, match=message):
        instantiate(SAMPLERS, {"name": name, **kwargs})


@pytest.mark.parametrize("sampler", [FixedFpsSampler(), AdaptiveFpsSampler(), DurationSampler()], ids=repr)
@pytest.mark.parametrize("args, message", [((0, 30.0), "0 frames"), ((10, 0.0), "fps"), ((10, float("nan")), "fps"),
                                           ((10, 30.0, 0.0), "duration"), ((10, 30.0, -2.0), "duration")])
def test_call_errors(sampler, args, message):
    with pytest.raises(ValueError, match=message):
        sampler(*args)
