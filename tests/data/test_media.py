"""Images, frame folders, GIFs and segments: read like videos, turned into samples with the right slots."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrc.data.dataset import VideoConversationDataset
from lrc.data.formats import read_annotations
from lrc.data.media import (FrameFolder, GifFile, MediaReadError, open_video, read_image, read_images,
                            segment_frames)
from lrc.data.video import VideoFile, VideoReadError


def _frames(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # flat colours: lossless formats give them back exactly, and a resize keeps them
    return [np.full((size, size, 3), rng.integers(0, 255, 3), dtype=np.uint8) for _ in range(n)]


def _folder(path: Path, frames: list[np.ndarray], ext: str = "png") -> Path:
    path.mkdir(parents=True)
    for k, f in enumerate(frames):
        Image.fromarray(f).save(path / f"frame_{k + 1}.{ext}")  # frame_1 ... frame_12: natural order matters
    return path


def _gif(path: Path, frames: list[np.ndarray], ms: int = 200) -> Path:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms, loop=0)
    return path


def test_frame_folder_reads_in_natural_order_at_its_fps(tmp_path):
    frames = _frames(12)
    folder = _folder(tmp_path / "clip", frames)
    (folder / "notes.txt").write_text("not a frame")
    with open_video(folder, fps=4.0) as video:
        assert isinstance(video, FrameFolder) and video.backend == "frames"
        assert (video.num_frames, video.fps, video.duration) == (12, 4.0, 3.0)
        got = video.get_frames([11, 0, 9, 9])
    assert np.array_equal(got, np.stack([frames[11], frames[0], frames[9], frames[9]]))
    with open_video(folder, size=8) as video:  # no fps given: data.frame_folder_fps's default
        assert video.fps == 1.0 and video.get_frames([1]).shape == (1, 8, 8, 3)


def test_gif_reads_its_frames_and_frame_rate(tmp_path):
    frames = _frames(6, seed=1)
    path = _gif(tmp_path / "a.gif", frames, ms=200)  # GIF delays are whole centiseconds
    with open_video(path, size=8) as video:
        assert isinstance(video, GifFile)
        assert video.num_frames == 6 and video.fps == pytest.approx(5.0) and video.duration == pytest.approx(1.2)
        got = video.get_frames([5, 0])
    assert got.shape == (2, 8, 8, 3)
    # a palette image keeps flat colours to within the GIF palette's rounding
    assert np.abs(got[0].astype(int) - frames[5][0, 0]).max() <= 8


def test_images_are_resized_like_frames(tmp_path):
    a, b = _frames(2, size=20, seed=2)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.jpg", quality=95)
    assert read_image(tmp_path / "a.png").shape == (20, 20, 3)
    both = read_images([tmp_path / "a.png", tmp_path / "b.jpg"], size=32)
    assert both.shape == (2, 32, 32, 3) and np.array_equal(both[0, 0, 0], a[0, 0])


def test_bad_media_have_short_reasons(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    Image.fromarray(_frames(1, 32)[0]).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])
    (tmp_path / "nothing").mkdir()
    reasons = {}
    for name in ("missing.png", "empty.png", "text.png", "cut.png"):
        with pytest.raises(MediaReadError) as err:
            read_image(tmp_path / name)
        reasons[name] = err.value.reason
    assert reasons["missing.png"] == "file not found" and reasons["empty.png"] == "zero bytes"
    assert reasons["text.png"] == "not an image Pillow can read" and reasons["cut.png"].startswith("decode failed")
    with pytest.raises(MediaReadError, match="no frames"):
        open_video(tmp_path / "nothing")
    with pytest.raises(MediaReadError, match="out of range"):
        FrameFolder(_folder(tmp_path / "two", _frames(2))).get_frames([2])
    assert isinstance(MediaReadError("x", "y"), VideoReadError)  # skipped and counted like a bad video


def test_segment_frames():
    assert segment_frames(100, 10.0, None, None) == (0, 100)
    assert segment_frames(100, 10.0, 1.5, 4.0) == (15, 40)
    assert segment_frames(100, 10.0, 1.55, 4.01) == (15, 41)  # the frames on screen in [start, end)
    assert segment_frames(100, 10.0, 9.0, 60.0) == (90, 100)  # an end past the video is clamped
    with pytest.raises(MediaReadError, match="starts at 12 s but the video lasts 10.000 s"):
        segment_frames(100, 10.0, 12.0, 13.0)


class _Uniform:
    """The uniform sampler's arithmetic (midpoints of equal segments), as lrc's built-in computes it."""

    def __init__(self, n):
        self.n = n

    def __call__(self, video_frames, fps, duration):
        from lrc.data.sampling import midpoint_indices

        idx = midpoint_indices(video_frames, fps, self.n)
        return idx, idx / fps


def _dataset(records, prompts, n=4, **kw):
    return VideoConversationDataset(records, _Uniform(n), prompts, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                    **kw)


@pytest.fixture(scope="module")
def prompts(corpus):
    from transformers import AutoTokenizer

    from lrc.data.prompt import PromptBuilder, prepare_tokenizer

    return PromptBuilder(prepare_tokenizer(AutoTokenizer.from_pretrained(str(corpus / "tokenizer"))), tokens_per_frame=3)


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_segment_is_sampled_as_a_video_of_its_own(corpus, prompts, tmp_path):
    video = sorted((corpus / "videos").glob("*.mp4"))[0]
    with VideoFile(video) as v:
        fps, n = v.fps, v.num_frames
    start, end = 1.0, 2.0
    rows = [{"id": "seg", "video": str(video), "start": start, "end": end,
             "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "red"}]},
            {"id": "whole", "video": str(video),
             "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "red"}]}]
    ds = _dataset(read_annotations(_write(tmp_path / "a.jsonl", rows)).records, prompts)
    frames, timestamps, duration, indices = ds._frames(ds.records[0])
    lo, hi = round(start * fps), round(end * fps)
    assert all(lo <= i < hi for i in indices) and len(indices) == 4
    assert duration == pytest.approx((hi - lo) / fps) and timestamps.max() < duration  # the segment's own clock
    item = ds[0]
    assert "The video lasts for 1.00 seconds" in prompts.tok.decode(item["input_ids"])
    assert ds._frames(ds.records[1])[3].max() > hi  # the whole video is sampled without a segment
    assert ds.num_tokens(0) == len(item["input_ids"])
    with VideoFile(video) as v:
        assert np.array_equal(frames, v.get_frames(indices))
    assert n > hi


def test_image_records_become_one_frame_clips_with_their_own_slots(prompts, tmp_path):
    for k, f in enumerate(_frames(3, size=24, seed=3)):
        Image.fromarray(f).save(tmp_path / f"{k}.png")
    rows = [{"id": "one", "image": "0.png", "task": "mcq", "options": ["A", "B"], "answer": "B",
             "conversations": [{"from": "human", "value": "<image>\nWhat colour is the circle?"},
                               {"from": "gpt", "value": "B"}]},
            {"id": "three", "images": ["0.png", "1.png", "2.png"],
             "conversations": [{"from": "human", "value": "<image>\n<image>\n<image>\nWhat colour is the circle?"},
                               {"from": "gpt", "value": "red"}]},
            {"id": "gone", "image": "missing.png",
             "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "red"}]}]
    ds = _dataset(read_annotations(_write(tmp_path / "i.jsonl", rows)).records, prompts)
    one, three, gone = ds[0], ds[1], ds[2]
    slot = prompts.img_context_id
    assert one["pixel_values"].shape == (1, 3, 32, 32) and one["media"] == "image"
    assert int((one["input_ids"] == slot).sum()) == 3 and float(one["timestamps"].sum()) == 0.0
    assert one["duration"] == 0.0 and one["answer_index"] == 1
    assert three["pixel_values"].shape == (3, 3, 32, 32) and int((three["input_ids"] == slot).sum()) == 9
    text = prompts.tok.decode(three["input_ids"])
    assert "1: <IMG_CONTEXT>" in text and "3: <IMG_CONTEXT>" in text and "video lasts" not in text
    assert "1: <IMG" not in prompts.tok.decode(one["input_ids"])  # a single image is not numbered
    assert gone["skipped"].reason == "file not found" and gone["skipped"].video == str(tmp_path / "missing.png")
    assert [ds.num_tokens(i) for i in range(3)] == [len(one["input_ids"]), len(three["input_ids"]), 0]


def test_image_prompt_needs_one_placeholder_per_image(prompts):
    from lrc.data.prompt import PromptError

    turns = [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]
    with pytest.raises(PromptError, match=r"1 <image> placeholder\(s\) in the human turns for 2 image\(s\)"):
        prompts.encode_conversation(turns, None, 2, sample_id="s", images=True)
    enc = prompts.encode_conversation(turns, None, 1, sample_id="s", images=True)
    assert enc.input_ids.count(prompts.img_context_id) == 3 and enc.query_positions


def test_frame_folder_and_gif_records_train_like_videos(prompts, tmp_path):
    _folder(tmp_path / "clip", _frames(10))
    _gif(tmp_path / "g.gif", _frames(5, seed=4), ms=200)
    rows = [{"id": "folder", "video": "clip", "fps": 5.0,
             "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "red"}]},
            {"id": "gif", "video": "g.gif",
             "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "red"}]},
            {"id": "slow", "video": "clip",
             "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "red"}]}]
    ds = _dataset(read_annotations(_write(tmp_path / "v.jsonl", rows)).records, prompts, frame_folder_fps=2.0)
    folder, gif, slow = ds[0], ds[1], ds[2]
    assert folder["pixel_values"].shape == (4, 3, 32, 32) and folder["media"] == "video"
    assert folder["duration"] == pytest.approx(2.0) and slow["duration"] == pytest.approx(5.0)  # 10 frames at 2 fps
    assert gif["duration"] == pytest.approx(1.0) and gif["pixel_values"].shape[0] == 4
