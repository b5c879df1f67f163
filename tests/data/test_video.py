"""VideoFile: PyAV first, decord (optional) second, and a VideoReadError with a clear reason for bad files;
read_frames: exact frames equal a full decode's, approximate ones are key frames near the request with true
timestamps; decord absent."""

from __future__ import annotations

import numpy as np
import pytest

from lrc.data import video as video_module
from lrc.data.synth import synthesize
from lrc.data.video import VideoFile, VideoReadError, decord_available

# decord is an optional extra: the tests of it (and of falling back to it) run where it is installed
needs_decord = pytest.mark.skipif(not decord_available(), reason="decord is not installed (pip install decord)")
DECORD = pytest.param("decord", marks=needs_decord)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """One real H.264 MP4 (64 px, a few seconds) from the synthetic corpus."""
    out = tmp_path_factory.mktemp("video_corpus")
    synthesize(out, videos=2, seed=3, min_seconds=2.0, max_seconds=3.0)
    return str(out / "videos" / "synth-000000.mp4")


@pytest.mark.parametrize("backend", [None, DECORD, "pyav"])
def test_metadata_and_frames(clip, backend):
    with VideoFile(clip, size=32, backend=backend) as v:
        assert v.backend == (backend or "pyav")
        assert v.num_frames >= 2 and v.fps > 0
        assert v.duration == pytest.approx(v.num_frames / v.fps)
        frames = v.get_frames([0, v.num_frames - 1])
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("backend", [DECORD, "pyav"])
def test_native_size_when_size_is_none(clip, backend):
    with VideoFile(clip, backend=backend) as v:
        assert v.get_frames([0]).shape == (1, 64, 64, 3)


@pytest.mark.parametrize("backend", [DECORD, "pyav"])
def test_repeated_and_unsorted_indices(clip, backend):
    with VideoFile(clip, size=32, backend=backend) as v:
        last = v.num_frames - 1
        frames = v.get_frames([last, 0, last, 1])
        single = np.concatenate([v.get_frames([i]) for i in (last, 0, last, 1)])
    assert frames.shape[0] == 4
    np.testing.assert_array_equal(frames[0], frames[2])
    np.testing.assert_array_equal(frames, single)


@needs_decord
def test_backends_agree_on_content(clip):
    with VideoFile(clip, size=32, backend="decord") as a, VideoFile(clip, size=32, backend="pyav") as b:
        assert (a.num_frames, a.fps) == (b.num_frames, b.fps)
        idx = list(range(0, a.num_frames, 3))
        diff = np.abs(a.get_frames(idx).astype(int) - b.get_frames(idx).astype(int))
    # the two resizers interpolate a little differently at shape edges; content is the same
    assert diff.mean() < 8


@pytest.mark.parametrize("backend", [DECORD, "pyav"])
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
    # every installed decoder was tried and is named in the reason
    assert "pyav" in err.value.reason and ("decord" in err.value.reason) == decord_available()


def test_truncated_mp4(clip, tmp_path):
    path = tmp_path / "truncated.mp4"
    with open(clip, "rb") as fh:
        path.write_bytes(fh.read(2048))
    with pytest.raises(VideoReadError) as err:
        with VideoFile(path, size=32) as v:
            v.get_frames(range(v.num_frames))
    # which one depends on where the cut falls: FFmpeg may still see the container but no stream
    assert err.value.reason.startswith(("cannot open as video", "no video stream", "decode failed"))


@needs_decord
def test_falls_back_to_decord_when_pyav_cannot_open(clip, monkeypatch):
    def broken(self, path, size, threads=1):
        raise RuntimeError("pyav exploded")

    monkeypatch.setattr(video_module._PyAVReader, "__init__", broken)
    with VideoFile(clip, size=32) as v:
        assert v.backend == "decord"
        assert v.get_frames([0]).shape == (1, 32, 32, 3)


@needs_decord
def test_retries_with_decord_when_pyav_fails_to_decode(clip, monkeypatch):
    with VideoFile(clip, size=32, backend="decord") as v:
        expected = v.get_frames([0, 2])

    def broken(self, indices):
        raise RuntimeError("pyav cannot seek")

    monkeypatch.setattr(video_module._PyAVReader, "get_frames", broken)
    with VideoFile(clip, size=32) as v:
        assert v.backend == "pyav"
        frames = v.get_frames([0, 2])
        assert v.backend == "decord"  # later calls go straight to decord
    np.testing.assert_array_equal(frames, expected)


@needs_decord
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


@needs_decord
def test_both_decoders_failing_is_one_clear_error(clip, monkeypatch):
    def decord_broken(self, indices):
        raise RuntimeError("decord cannot seek")

    def pyav_broken(self, indices):
        raise RuntimeError("pyav hit a corrupt packet")

    monkeypatch.setattr(video_module._DecordReader, "get_frames", decord_broken)
    monkeypatch.setattr(video_module._PyAVReader, "get_frames", pyav_broken)
    with VideoFile(clip) as v, pytest.raises(VideoReadError) as err:
        v.get_frames([0])
    assert err.value.reason == "decode failed: pyav: pyav hit a corrupt packet; decord: decord cannot seek"


# -- issue 15: stable reasons, symlink loops named, the duration of a variable-frame-rate video ----------
DECORD_LOG_TIME = r"\[\d{1,2}:\d{2}:\d{2}\]"


def _corrupt_until_decord_fails_to_decode(clip: str, tmp_path) -> str:
    """A copy of ``clip`` with bytes overwritten in its frame data, where decord opens the file but fails to
    decode it with one of its log lines (which start with the time of day)."""
    import random
    import re

    import decord

    data = open(clip, "rb").read()
    rng = random.Random(0)
    for offset in range(48, len(data) // 2, 97):
        bad = bytearray(data)
        for i in range(offset, min(len(bad) - 2000, offset + 3000)):
            bad[i] = rng.randrange(256)
        path = tmp_path / f"bad-{offset}.mp4"
        path.write_bytes(bytes(bad))
        try:
            reader = decord.VideoReader(str(path), width=32, height=32)
            reader.get_batch(list(range(len(reader)))).asnumpy()
        except Exception as exc:  # noqa: BLE001
            if re.search(DECORD_LOG_TIME, str(exc)) and "ERROR opening" not in str(exc):
                return str(path)
    pytest.skip("no corruption of this clip makes decord fail to decode with a log line")


@needs_decord
def test_a_bad_files_reason_is_the_same_on_every_run(clip, tmp_path):
    """decord's messages start with a time of day and a source location: the skip reason of one file differed
    from run to run (skipped.json files could not be compared)."""
    import re
    import time

    bad = _corrupt_until_decord_fails_to_decode(clip, tmp_path)
    reasons = []
    for _ in range(2):
        with pytest.raises(VideoReadError) as err:
            with VideoFile(bad, size=32, backend="decord") as v:
                v.get_frames(list(range(v.num_frames)))
        reasons.append(err.value.reason)
        time.sleep(1.1)  # the log's clock moves on
    assert reasons[0] == reasons[1]
    assert reasons[0].startswith("decode failed: ")
    assert not re.search(DECORD_LOG_TIME, reasons[0]) and ".cc:" not in reasons[0]


def test_a_symlink_loop_is_named_as_one(tmp_path):
    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    with pytest.raises(VideoReadError) as err:
        VideoFile(tmp_path / "a.mp4")
    assert err.value.reason.startswith("symlink loop")  # was: "file not found"


def _vfr_video(path, fmt: str) -> None:
    """10 frames 0.1 s apart, then 10 frames 1 s apart: the last frame starts at 10 s."""
    import fractions

    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.time_base = fractions.Fraction(1, 1000)
        for i, pts in enumerate([i * 100 for i in range(10)] + [1000 + i * 1000 for i in range(10)]):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, stream.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("fmt, ext", [("mp4", "mp4"), ("matroska", "mkv")])
@pytest.mark.parametrize("backend", [DECORD, "pyav"])
def test_a_variable_frame_rate_videos_duration_comes_from_its_timestamps(tmp_path, fmt, ext, backend):
    """The average rate said 8.3 s (MP4) or 2.0 s (MKV) for this 10.1 s video; the frames' own timestamps
    say 10.1, and the rate samplers get spreads the 20 frames over it."""
    path = tmp_path / f"vfr.{ext}"
    _vfr_video(path, fmt)
    with VideoFile(path, backend=backend) as v:
        assert v.num_frames == 20
        assert v.duration == pytest.approx(10.1, abs=0.05)
        assert v.fps == pytest.approx(20 / v.duration)
