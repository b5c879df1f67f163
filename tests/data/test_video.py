"""VideoFile: decord first, PyAV fallback, and a VideoReadError with a clear reason for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from lrc.data import video as video_module
from lrc.data.synth import synthesize
from lrc.data.video import VideoFile, VideoReadError


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """One real H.264 MP4 (64 px, a few seconds) from the synthetic corpus."""
    out = tmp_path_factory.mktemp("video_corpus")
    synthesize(out, videos=2, seed=3, min_seconds=2.0, max_seconds=3.0)
    return str(out / "videos" / "synth-000000.mp4")


@pytest.mark.parametrize("backend", [None, "decord", "pyav"])
def test_metadata_and_frames(clip, backend):
    with VideoFile(clip, size=32, backend=backend) as v:
        assert v.backend == (backend or "decord")
        assert v.num_frames >= 2 and v.fps > 0
        assert v.duration == pytest.approx(v.num_frames / v.fps)
        frames = v.get_frames([0, v.num_frames - 1])
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_native_size_when_size_is_none(clip, backend):
    with VideoFile(clip, backend=backend) as v:
        assert v.get_frames([0]).shape == (1, 64, 64, 3)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_repeated_and_unsorted_indices(clip, backend):
    with VideoFile(clip, size=32, backend=backend) as v:
        last = v.num_frames - 1
        frames = v.get_frames([last, 0, last, 1])
        single = np.concatenate([v.get_frames([i]) for i in (last, 0, last, 1)])
    assert frames.shape[0] == 4
    np.testing.assert_array_equal(frames[0], frames[2])
    np.testing.assert_array_equal(frames, single)


def test_backends_agree_on_content(clip):
    with VideoFile(clip, size=32, backend="decord") as a, VideoFile(clip, size=32, backend="pyav") as b:
        assert (a.num_frames, a.fps) == (b.num_frames, b.fps)
        idx = list(range(0, a.num_frames, 3))
        diff = np.abs(a.get_frames(idx).astype(int) - b.get_frames(idx).astype(int))
    # the two resizers interpolate a little differently at shape edges; content is the same
    assert diff.mean() < 8


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("bad", ["too_high", "negative"])
def test_out_of_range_index(clip, backend, bad):
    with VideoFile(clip, size=32, backend=backend) as v:
        index = v.num_frames if bad == "too_high" else -1
        with pytest.raises(VideoReadError) as err:
            v.get_frames([0, index])
    assert "out of range" in err.value.reason and str(index) in err.value.reason
    assert err.value.path == clip


def test_empty_indices(clip):
    with VideoFile(clip) as v, pytest.raises(VideoReadError, match="no frame indices"):
        v.get_frames([])


def test_released_on_exit(clip):
    with VideoFile(clip) as v:
        pass
    assert v._reader is None
    with pytest.raises(VideoReadError, match="closed"):
        v.get_frames([0])


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoReadError) as err:
        VideoFile(path)
    assert err.value.reason == "file not found"
    assert err.value.path == str(path) and str(path) in str(err.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoReadError) as err:
        VideoFile(path)
    assert err.value.reason == "zero bytes"


def test_directory(tmp_path):
    with pytest.raises(VideoReadError) as err:
        VideoFile(tmp_path)
    assert err.value.reason == "not a regular file"


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not the frames you are looking for\n" * 20)
    with pytest.raises(VideoReadError) as err:
        VideoFile(path)
    assert err.value.reason.startswith("cannot open as video")
    # both decoders were tried and both are named in the reason
    assert "decord" in err.value.reason and "pyav" in err.value.reason


def test_truncated_mp4(clip, tmp_path):
    path = tmp_path / "truncated.mp4"
    with open(clip, "rb") as fh:
        path.write_bytes(fh.read(2048))
    with pytest.raises(VideoReadError) as err:
        with VideoFile(path, size=32) as v:
            v.get_frames(range(v.num_frames))
    # which one depends on where the cut falls: FFmpeg may still see the container but no stream
    assert err.value.reason.startswith(("cannot open as video", "no video stream", "decode failed"))


def test_falls_back_to_pyav_when_decord_cannot_open(clip, monkeypatch):
    def broken(self, path, size):
        raise RuntimeError("decord exploded")

    monkeypatch.setattr(video_module._DecordReader, "__init__", broken)
    with VideoFile(clip, size=32) as v:
        assert v.backend == "pyav"
        assert v.get_frames([0]).shape == (1, 32, 32, 3)


def test_retries_with_pyav_when_decord_fails_to_decode(clip, monkeypatch):
    with VideoFile(clip, size=32, backend="pyav") as v:
        expected = v.get_frames([0, 2])

    def broken(self, indices):
        raise RuntimeError("decord cannot seek")

    monkeypatch.setattr(video_module._DecordReader, "get_frames", broken)
    with VideoFile(clip, size=32) as v:
        assert v.backend == "decord"
        frames = v.get_frames([0, 2])
        assert v.backend == "pyav"  # later calls go straight to PyAV
    np.testing.assert_array_equal(frames, expected)


def test_forced_decord_does_not_fall_back(clip, monkeypatch):
    def broken(self, indices):
        raise RuntimeError("decord cannot seek")

    monkeypatch.setattr(video_module._DecordReader, "get_frames", broken)
    with VideoFile(clip, backend="decord") as v, pytest.raises(VideoReadError) as err:
        v.get_frames([0])
    assert err.value.reason == "decode failed: decord cannot seek"


def test_bad_arguments(clip):
    with pytest.raises(ValueError, match="backend"):
        VideoFile(clip, backend="opencv")
    with pytest.raises(ValueError, match="size"):
        VideoFile(clip, size=0)


def test_both_decoders_failing_is_one_clear_error(clip, monkeypatch):
    def decord_broken(self, indices):
        raise RuntimeError("decord cannot seek")

    def pyav_broken(self, indices):
        raise RuntimeError("pyav hit a corrupt packet")

    monkeypatch.setattr(video_module._DecordReader, "get_frames", decord_broken)
    monkeypatch.setattr(video_module._PyAVReader, "get_frames", pyav_broken)
    with VideoFile(clip) as v, pytest.raises(VideoReadError) as err:
        v.get_frames([0])
    assert err.value.reason == "decode failed: decord: decord cannot seek; pyav: pyav hit a corrupt packet"
