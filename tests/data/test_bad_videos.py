"""Bad video input never hangs or crashes a run, and every bad file is reported.

A *salted* copy of the test corpus gets one extra training record per kind of video trouble: five
unreadable files (missing, zero bytes, truncated, not a video, zero frames) and two odd but readable
ones (odd frame size, broken timestamps) that must still train.
"""

import json
import os
import shutil
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from lrc.cli import main
from lrc.config import load_config
from lrc.data.check import check_annotations, check_video
from lrc.data.dataset import Skipped, TooManyBadSamples, VideoDataModule
from lrc.data.video import VideoFile, VideoReadError, VideoReadTimeout

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"

# kind -> what the reason starts with (for a truncated file it depends on where the cut falls)
BAD = {
    "missing": ("file not found",),
    "zero_bytes": ("zero bytes",),
    "truncated": ("cannot open as video", "no video stream", "decode failed"),
    "not_a_video": ("cannot open as video",),
    "zero_frames": ("zero frames",),
}
READABLE = ("odd_size", "broken_timestamps")


def _write_video(path: Path, frames: int, width: int, height: int, codec: str = "libx264",
                 pix_fmt: str = "yuv420p", pts=None) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        container.start_encoding()  # writes the header even when no frame follows
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24")
            if pts is not None:
                frame.pts = pts(i)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _salt(corpus: Path, dest: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Copy the corpus to dest and add one training record per kind; returns bad and readable videos."""
    shutil.copytree(corpus, dest)
    videos = dest / "videos"
    good = sorted(videos.glob("*.mp4"))[0]
    bad = {kind: videos / f"{kind}.mp4" for kind in BAD}
    bad["zero_frames"] = videos / "zero_frames.avi"  # MPEG-4 in AVI keeps a video stream with no frame
    bad["zero_bytes"].write_bytes(b"")
    data = good.read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["not_a_video"].write_text("these are notes, not a video\n" * 20)
    _write_video(bad["zero_frames"], 0, 32, 32, codec="mpeg4")
    readable = {"odd_size": videos / "odd_size.mp4", "broken_timestamps": videos / "broken_timestamps.mp4"}
    _write_video(readable["odd_size"], 12, 33, 17, pix_fmt="yuv444p")  # x264 needs 4:4:4 for odd sides
    _write_video(readable["broken_timestamps"], 12, 32, 32, pts=lambda i: 0)  # every frame at t=0

    train = dest / "train.jsonl"
    template = json.loads(train.read_text().splitlines()[0])
    with train.open("a") as f:
        for kind, path in {**bad, **readable}.items():
            f.write(json.dumps({**template, "id": f"salt-{kind}", "video": f"videos/{path.name}"}) + "\n")
    return bad, readable


@pytest.fixture(scope="module")
def salted(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("salted") / "corpus"
    bad, readable = _salt(corpus, root)
    return root, bad, readable


def _overrides(tiny_overrides: list[str], root: Path, *extra: str) -> list[str]:
    return [o for o in tiny_overrides if not o.startswith("data.root=")] + [f"data.root={root}", *extra]


# -- reading ------------------------------------------------------------------------------------

def test_each_bad_kind_has_its_reason_and_odd_files_still_read(salted):
    _, bad, readable = salted
    for kind, path in bad.items():
        reason = check_video(path, size=32)
        assert reason is not None and reason.startswith(BAD[kind]), (kind, reason)
    for kind, path in readable.items():
        assert check_video(path, size=32) is None, kind
        with VideoFile(path, size=32) as video:
            assert video.get_frames([0, video.num_frames - 1]).shape == (2, 32, 32, 3)  # resized


def test_broken_timestamps_still_give_every_frame(salted):
    # all pts equal: the frame count comes from the stream, not the clock, so every frame is there
    _, _, readable = salted
    with VideoFile(readable["broken_timestamps"], size=32) as video:
        assert video.num_frames == 12 and video.fps > 0
        frames = video.get_frames(list(range(12)))
    assert frames.shape == (12, 32, 32, 3) and len({f.tobytes() for f in frames}) == 12


def test_work_that_exceeds_the_timeout_is_abandoned_and_cleans_up_after_itself():
    """The bound every open and read goes through, on work that really blocks (a decoder stuck in C++
    looks the same to Python): the caller gets VideoReadTimeout at the limit, and the abandoned work
    closes its own resources when it finally returns."""
    from lrc.data.video import _bounded

    release, cleaned = threading.Event(), threading.Event()
    with pytest.raises(VideoReadTimeout) as err:
        _bounded("stuck.mp4", 0.05, lambda: release.wait(30), cleaned.set)
    assert isinstance(err.value, VideoReadError) and err.value.reason == "timed out after 0.05s"
    assert not cleaned.is_set()
    release.set()  # the stuck call returns at last
    assert cleaned.wait(10)
    assert _bounded("fine.mp4", 5.0, lambda: 42, cleaned.set) == 42  # within the limit: its value


def test_read_that_exceeds_the_timeout_breaks_the_file_and_releases_the_reader(corpus):
    clip = sorted((corpus / "videos").glob("*.mp4"))[0]
    gate, closed = threading.Event(), threading.Event()
    with VideoFile(clip, size=32, timeout_s=30) as video:
        reader, real_read = video._reader, video._read
        real_close = reader.close
        reader.close = lambda: (real_close(), closed.set())

        def stuck_read(held, indices):  # the real decode, held back until the test lets it go: a hung
            gate.wait(30)               # decoder, whatever the speed or load of the machine
            return real_read(held, indices)

        video._read = stuck_read
        video.timeout_s = 0.05
        with pytest.raises(VideoReadTimeout, match="timed out after 0.05s"):
            video.get_frames(list(range(video.num_frames)))
        with pytest.raises(VideoReadError, match="timed out"):  # no second try on a stuck decoder
            video.get_frames([0])
    assert video._reader is None and not closed.is_set()  # the stuck worker still holds the reader
    gate.set()  # the stuck call comes back at last: its worker closes the reader it held
    assert closed.wait(10)
    for t in [t for t in threading.enumerate() if t.name.startswith("lrc-video-read")]:
        t.join(timeout=10)
        assert not t.is_alive()


def test_fifo_is_refused_without_blocking(tmp_path):
    # opening a FIFO for reading blocks until a writer comes; it is refused before any open
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    assert check_video(fifo, timeout_s=5) == "not a regular file"


def test_bad_timeout_argument(corpus):
    clip = sorted((corpus / "videos").glob("*.mp4"))[0]
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="timeout_s"):
            VideoFile(clip, timeout_s=bad)


# -- lrc data check -----------------------------------------------------------------------------

def test_data_check_lists_exactly_the_bad_records(salted, tmp_path, capsys):
    root, bad, _ = salted
    report = tmp_path / "report.json"
    code = main(["data", "check", str(root / "train.jsonl"), str(root / "val.jsonl"),
                 "--report", str(report), "--size", "32", "--timeout-s", "10"])
    out = capsys.readouterr().out
    assert code == 2
    rows = json.loads(report.read_text())["bad"]  # the skipped.json format
    assert {r["id"] for r in rows} == {f"salt-{kind}" for kind in BAD}
    for r in rows:
        kind = r["id"].removeprefix("salt-")
        assert set(r) == {"id", "video", "reason"} and Path(r["video"]) == bad[kind]
        assert r["reason"].startswith(BAD[kind]), r
    assert "5 unreadable video(s)" in out and "zero bytes" in out and "file not found" in out
    assert str(report) in out


def test_data_check_on_a_clean_corpus_exits_0(corpus, tmp_path, capsys):
    result = check_annotations([corpus / "train.jsonl", corpus / "val.jsonl"], size=32)
    assert result.records == 48 and result.videos == 12 and not result.skipped
    assert main(["data", "check", str(corpus / "val.jsonl"), "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["bad"] == []


# -- the run's bad-sample limit -----------------------------------------------------------------

def test_limit_counts_distinct_bad_samples_against_the_split(corpus):
    data = VideoDataModule(str(corpus / "train.jsonl"), str(corpus / "val.jsonl"), sampler=None, prompts=None,
                           image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, max_bad_fraction=0.2)
    first = Skipped("a", "a.mp4", "zero bytes")
    for _ in range(3):  # the same sample every epoch counts once; 1 of 8 val samples is allowed
        data.on_before_batch_transfer({"skipped": [first], "size": 3}, 0)
    assert data.seen["val"] == 12 and list(data.bad["val"]) == ["a"]
    with pytest.raises(TooManyBadSamples) as err:
        data.on_before_batch_transfer({"skipped": [Skipped("b", "b.mp4", "zero frames")], "size": 3}, 0)
    assert (err.value.bad, err.value.total) == (2, 8) and [s.id for s in err.value.skipped] == ["a", "b"]
    message = str(err.value)
    assert "2 of 8 val samples" in message and "data.max_bad_fraction=0.2" in message
    assert "lrc data check" in message


@pytest.mark.slow
def test_fit_on_salted_corpus_trains_to_the_end_and_lists_each_bad_file(salted, tiny_overrides, tmp_path):
    from lrc.train.run import fit

    root, bad, _ = salted
    # 5 bad of 47 training records: allowed at 0.2
    run_dir, metrics = fit(load_config(DEMO, _overrides(tiny_overrides, root, "data.max_bad_fraction=0.2")),
                           out=str(tmp_path / "run"))
    report = json.loads((run_dir / "skipped.json").read_text())
    assert {r["id"]: Path(r["video"]) for r in report} == {f"salt-{kind}": path for kind, path in bad.items()}
    assert metrics["data/skipped"] == len(bad) and metrics["train/steps"] > 0
    # decoded in a worker process by default; the fit reports how long it waited for batches
    assert metrics["data/wait_s"] >= 0 and 0 <= metrics["data/wait_fraction"] < 1
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_fit_stops_clearly_when_too_many_samples_are_bad(salted, tiny_overrides, tmp_path, capsys):
    root, bad, _ = salted
    run_dir = tmp_path / "run"
    overrides = _overrides(tiny_overrides, root, "data.max_bad_fraction=0.0")
    code = main(["fit", str(DEMO), "--out", str(run_dir), *overrides])
    err = capsys.readouterr().err
    assert code == 2
    report = json.loads((run_dir / "skipped.json").read_text())
    assert report and {r["id"] for r in report} <= {f"salt-{kind}" for kind in bad}
    assert "data.max_bad_fraction=0" in err and str(run_dir / "skipped.json") in err and "lrc data check" in err
    assert not (run_dir / "metrics.json").exists()
