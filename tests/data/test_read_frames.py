"""read_frames / VideoFile.read: exact frames are a full decode's frames, approximate ones are key frames near the
request with their true indices and timestamps, files the index cannot serve still read, decord may be absent,
and bad files give clear errors."""

from __future__ import annotations

import sys

import av
import numpy as np
import pytest

from lrc.data import read_frames
from lrc.data import video as video_module
from lrc.data.annotations import Record
from lrc.data.dataset import VideoConversationDataset
from lrc.data.video import (Frames, VideoFile, VideoReadError, approximate_indices, decode_runs, decord_available)
from lrc.errors import MissingDependencyError

GOP = 30  # frames from one key frame to the next in the test video


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> str:
    """240 frames (8 s at 30 fps) of H.264 with B-frames and a key frame every 30 frames (x264, no scene cuts)."""
    path = tmp_path_factory.mktemp("read_frames") / "gop30.mp4"
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=3", "preset": "veryfast"}
        for i in range(240):
            image = texture[i % 100 // 2:i % 100 // 2 + 48, i % 90:i % 90 + 64].copy()
            image[(2 * i) % 40:(2 * i) % 40 + 8, (3 * i) % 56:(3 * i) % 56 + 8] = (255, (7 * i) % 256, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


@pytest.fixture(scope="module")
def every_frame(long_clip) -> np.ndarray:
    """The reference: every frame, decoded from the start of the stream."""
    with av.open(long_clip) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


INDEX_SETS = {
    "sparse": [15, 75, 135, 195],
    "unsorted_with_repeats": [200, 3, 3, 119, 200, 61],
    "dense": list(range(40, 70)),
    "key_frames_and_ends": [0, 30, 59, 60, 239],
}


@pytest.mark.parametrize("threads", [1, 3])  # 3: runs decoded in parallel, each thread with its own decoder
@pytest.mark.parametrize("name", INDEX_SETS)
def test_exact_frames_equal_a_full_decodes_frames(long_clip, every_frame, name, threads):
    indices = INDEX_SETS[name]
    got = read_frames(long_clip, indices, threads=threads)
    assert isinstance(got, Frames)
    np.testing.assert_array_equal(got.frames, every_frame[indices])
    np.testing.assert_array_equal(got.indices, indices)
    np.testing.assert_allclose(got.timestamps, np.asarray(indices) / 30.0)
    frames, returned, timestamps = got  # unpacks as a tuple
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), 48, 64, 3)


def test_exact_reads_seek_and_do_not_fall_back(long_clip, every_frame, monkeypatch):
    """The frames above came from seeking with the index (not from the decode-from-start fallback), and from
    fewer seeks than frames where frames share a key frame."""
    seeks = []
    real = video_module._PyAVReader._decode_run

    def counting(self, container, stream, key, run, out):
        seeks.append(key)
        return real(self, container, stream, key, run, out)

    monkeypatch.setattr(video_module._PyAVReader, "_decode_run", counting)
    with VideoFile(long_clip, timeout_s=None) as video:
        assert video.backend == "pyav"
        np.testing.assert_array_equal(video.keyframes, np.arange(0, 240, GOP))
        frames = video.get_frames([5, 20, 100, 101, 230])
        assert video._reader._pts is not None  # the index still serves this file
    np.testing.assert_array_equal(frames, every_frame[[5, 20, 100, 101, 230]])
    assert seeks == [0, 90, 210]


def test_resized_frames_are_the_same_either_way(long_clip):
    indices = [7, 64, 199]
    with VideoFile(long_clip, size=32) as video:
        seeking = video.get_frames(indices)
        video._reader._pts = video._reader.keyframes = None  # as for a file the index cannot serve
        from_start = video.get_frames(indices)
    assert seeking.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(seeking, from_start)


def test_decode_runs_continue_past_a_passed_key_frame():
    keys = np.array([0, 30, 60, 90])
    # 50's key frame (30) is behind 35, already decoded: decode on; 35's (30) is ahead of 20: seek to it
    assert decode_runs([5, 20, 35, 50, 95], keys) == [(0, [5, 20]), (30, [35, 50]), (90, [95])]
    assert decode_runs([31, 45, 61], keys) == [(30, [31, 45]), (60, [61])]


def test_approximate_indices_take_key_frames_less_than_half_a_step_away():
    keys = np.array([0, 30, 60, 90])
    # sparse requests: each takes its nearest key frame
    assert approximate_indices([10, 50, 80], keys).tolist() == [0, 60, 90]
    # 30 is 2 frames from 28 and from 32, not less than half-way: both are read exactly (not 0 and 60)
    assert approximate_indices([28, 32], keys).tolist() == [28, 32]
    # 35 and 40 are 5 apart: their key frame (30) is too far for either; 55 takes 60 (5 < 15 / 2)
    assert approximate_indices([35, 40, 55], keys).tolist() == [35, 40, 60]
    assert approximate_indices([44], keys).tolist() == [30]  # alone: the nearest key frame
    # order and repeats of the request are kept
    assert approximate_indices([80, 10, 80], keys).tolist() == [90, 0, 90]


@pytest.mark.parametrize("indices", [[15, 75, 135, 195], list(range(3, 240, 8)), [229, 238]])
def test_approximate_frames_are_near_key_frames_with_true_timestamps(long_clip, every_frame, indices):
    got = read_frames(long_clip, indices, exact=False)
    wanted = np.asarray(indices)
    keys = set(range(0, 240, GOP))
    moved = got.indices != wanted
    assert all(int(i) in keys for i in got.indices[moved])  # a moved frame is a key frame
    assert np.all(np.abs(got.indices - wanted) <= GOP)  # within one key-frame interval
    assert np.all(2 * np.abs(got.indices - wanted) < np.diff(wanted).min())  # less than half a step away
    assert np.all(np.diff(got.indices) > 0)  # distinct and in order, as the request
    np.testing.assert_array_equal(got.frames, every_frame[got.indices])  # each frame is the one it says
    np.testing.assert_allclose(got.timestamps, got.indices / 30.0)
    if len(indices) == 4:  # sparse: every frame is a key frame, each the nearest to its request
        assert got.indices.tolist() == [0, 60, 120, 180]


def test_a_dense_request_is_read_almost_exactly(long_clip):
    wanted = np.arange(0, 240, 2)
    got = read_frames(long_clip, wanted, exact=False)
    assert np.all(np.abs(got.indices - wanted) <= 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_file_whose_seek_fails_is_read_from_the_start(long_clip, every_frame, monkeypatch, threads):
    def lands_elsewhere(self, *args):
        raise video_module._SeekFailed("the seek landed on another packet")

    monkeypatch.setattr(video_module._PyAVReader, "_decode_run", lands_elsewhere)
    with VideoFile(long_clip, threads=threads) as video:
        got = video.read([10, 100], exact=False)  # planned as key frames 0 and 90, read from the start
        assert video.keyframes is None  # from now on: approximate reads are exact
        np.testing.assert_array_equal(got.indices, [0, 90])
        np.testing.assert_array_equal(got.frames, every_frame[got.indices])
        np.testing.assert_array_equal(video.read([40, 41], exact=False).indices, [40, 41])


def test_approximate_reads_with_decord(long_clip, every_frame):
    if not decord_available():
        pytest.skip("decord is not installed")
    with VideoFile(long_clip, backend="decord") as video:
        got = video.read([15, 75, 135, 195], exact=False)
    assert got.indices.tolist() == [0, 60, 120, 180]
    np.testing.assert_array_equal(got.frames, every_frame[got.indices])


# -- decord absent ------------------------------------------------------------------------------------
def test_without_decord_pyav_reads_and_asking_for_decord_says_how_to_install_it(long_clip, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now fails as if it were not installed
    assert not decord_available()
    with VideoFile(long_clip) as video:
        assert video.backend == "pyav" and video.get_frames([0]).shape == (1, 48, 64, 3)
    with pytest.raises(MissingDependencyError) as err:
        VideoFile(long_clip, backend="decord")
    assert "decord" in str(err.value) and "pip install" in str(err.value)
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 50)
    with pytest.raises(VideoReadError) as bad:
        VideoFile(notes)
    assert bad.value.reason.startswith("cannot open as video: pyav:") and "decord" not in bad.value.reason


# -- bad input ------------------------------------------------------------------------------------------
def test_bad_files_and_indices_give_clear_errors(long_clip, tmp_path):
    with pytest.raises(VideoReadError) as err:
        read_frames(tmp_path / "missing.mp4", [0])
    assert err.value.reason == "file not found" and "missing.mp4" in str(err.value)
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 50)
    with pytest.raises(VideoReadError) as err:
        read_frames(notes, [0], exact=False)
    assert err.value.reason.startswith("cannot open as video")
    for exact in (True, False):
        with pytest.raises(VideoReadError, match=r"frame index 240 out of range \[0, 240\)"):
            read_frames(long_clip, [3, 240], exact=exact)


# -- the data module ------------------------------------------------------------------------------------
class _EveryFortyFrames:
    exact = False

    def __call__(self, video_frames, fps, duration=None):
        indices = np.arange(20, video_frames, 40)
        return indices, indices / fps


def test_the_dataset_uses_the_frames_actually_read(long_clip):
    record = Record(id="r", video=long_clip, conversations=[])
    dataset = VideoConversationDataset([record], _EveryFortyFrames(), prompts=None, image_size=32,
                                       mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frames, timestamps, duration, indices = dataset._frames(record)
    # requests 20, 60, ..., 220 (40 apart): key frames less than 20 frames away, else the frame itself
    assert indices.tolist() == [30, 60, 90, 150, 180, 210]
    np.testing.assert_allclose(timestamps, indices / 30.0)
    assert frames.shape == (6, 32, 32, 3) and duration == pytest.approx(8.0)
    segment = Record(id="s", video=long_clip, conversations=[], start=2.0, end=8.0)  # frames 60..239
    _, timestamps, _, indices = dataset._frames(segment)
    assert indices[0] == 90 and timestamps[0] == pytest.approx(1.0)  # 20 frames into the segment → key frame 90
