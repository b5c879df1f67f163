"""Fixtures of the benchmark tests: each benchmark's folder in its own published layout and annotation format (what
the Hugging Face datasets and the official repositories ship), with short synthetic videos; a tiny trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"
FPS = 4


def write_video(path: Path, seconds: float, fps: int = FPS, seed: int = 0, size: int = 32) -> Path:
    """A real MP4 of moving shapes lasting ``seconds`` (``seconds * fps`` frames)."""
    from lrc.data.synth.scenes import encode_video, render, video_codec, video_spec

    spec = video_spec(np.random.default_rng(seed), size, 3.0, 4.0)
    spec.update(fps=fps, num_frames=int(round(seconds * fps)))
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_video(render(spec, size), path, fps, size, video_codec())
    return path


def write_frames(folder: Path, count: int, size: int = 32) -> Path:
    """A folder of JPEG frames named as MVBench's TVQA frames are (00001.jpg ...)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        Image.fromarray(np.full((size, size, 3), 10 * k, dtype=np.uint8)).save(folder / f"{k + 1:05d}.jpg")
    return folder


def write_json(path: Path, rows: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pa = pytest.importorskip("pyarrow", reason="Parquet files need pyarrow (the eval extra)")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_mvbench(root: Path) -> Path:
    """Four tasks in the layouts MVBench is found in: InternVL's (DATA/video/<source>/, full-length videos whose
    segment applies; TVQA as frame folders at 3 fps) and lmms-eval's video revision (no video/ level; pre-cut
    segments, whose start/end no longer apply)."""
    write_video(root / "video/star/Charades_v1_480/clip_a.mp4", 6.0, seed=1)
    write_json(root / "json/action_sequence.json", [
        {"video": "clip_a.mp4", "question": "What happened after the person took the cup?",
         "candidates": ["Put down the cup.", "Opened the door."], "answer": "Opened the door.", "start": 1.0,
         "end": 3.0}])
    write_frames(root / "video/tvqa/frames_fps3_hq/s01e02_seg", 12)
    write_json(root / "json/episodic_reasoning.json", [
        {"video": "s01e02_seg", "question": "Why is Ross upset?", "candidates": ["He lost", "He won", "He is late"],
         "answer": "He is late", "start": 0.5, "end": 3.5}])
    write_video(root / "clevrer/video_validation/video_10000.mp4", 4.0, seed=2)
    write_json(root / "json/moving_count.json", [
        {"video": "video_10000.mp4", "question": "How many metal objects are moving?", "candidates": ["1", "2", "3"],
         "answer": "2"},
        {"video": "video_10000.mp4", "question": "How many cubes are moving?", "candidates": ["1", "2", "3"],
         "answer": "3"}])
    write_video(root / "sta/sta_video_segment/seg_b.mp4", 3.0, seed=3)
    write_json(root / "json/action_localization.json", [
        {"video": "seg_b.mp4", "question": "During which part of the video does the person sit?",
         "candidates": ["At the beginning", "In the middle", "At the end"], "answer": "At the end", "start": 10.0,
         "end": 13.0}])
    return root


def make_videomme(root: Path) -> Path:
    rows = [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "u",
         "videoID": "vidA", "question_id": "001-1", "task_type": "Counting Problem",
         "question": "How many planets are shown?", "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."],
         "answer": "C"},
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "u",
         "videoID": "vidA", "question_id": "001-2", "task_type": "Object Recognition",
         "question": "Which planet is red?", "options": ["A. Mars.", "B. Venus.", "C. Earth.", "D. Jupiter."],
         "answer": "A"},
        {"video_id": "802", "duration": "long", "domain": "Sports Competition", "sub_category": "Football",
         "url": "u", "videoID": "vidB", "question_id": "802-1", "task_type": "OCR Problems",
         "question": "What is the final score?", "options": ["A. 1-0.", "B. 2-1.", "C. 0-0.", "D. 3-2."],
         "answer": "D"}]
    try:  # the Hugging Face copy is Parquet; without pyarrow (no eval extra) the same rows as JSON lines
        import pyarrow  # noqa: F401

        write_parquet(root / "videomme/test-00000-of-00001.parquet", rows)
    except ImportError:
        (root / "videomme").mkdir(parents=True, exist_ok=True)
        (root / "videomme/videomme.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_video(root / "data/vidA.mp4", 4.0, seed=4)
    write_video(root / "data/vidB.mp4", 5.0, seed=5)
    (root / "subtitle").mkdir(parents=True, exist_ok=True)
    (root / "subtitle/vidA.srt").write_text(
        '1\n00:00:00,000 --> 00:00:01,500\n<font color="white" size=".72c">hello there</font>\n\n'
        "2\n00:00:04,000 --> 00:00:05,000\nlate line\n")
    return root


def make_longvideobench(root: Path) -> Path:
    write_json(root / "lvb_val.json", [
        {"video_id": "v1", "id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4", "question": "What does the man hold?",
         "question_wo_referring_query": "What does he hold?", "candidates": ["a cup", "a phone", "a pen", "a book"],
         "correct_choice": 1, "position": [1], "topic_category": "NP-News-Programs", "question_category": "S2E",
         "level": "L1-Perception", "subtitle_path": "86CxyhFV9MI_en.json", "duration_group": 15, "duration": 12.0,
         "starting_timestamp_for_subtitles": 0},
        {"video_id": "v2", "id": "7F9IrtSHmc0_3", "video_path": "7F9IrtSHmc0.mp4", "question": "What comes last?",
         "question_wo_referring_query": "What comes last?", "candidates": ["one", "two", "three", "four", "five"],
         "correct_choice": 4, "position": [2], "topic_category": "KS-Knowledge", "question_category": "T3O",
         "level": "L2-Relation", "subtitle_path": "7F9IrtSHmc0_en.json", "duration_group": 600, "duration": 400.0,
         "starting_timestamp_for_subtitles": 0}])
    write_video(root / "videos/86CxyhFV9MI.mp4", 3.0, seed=6)
    write_video(root / "videos/7F9IrtSHmc0.mp4", 4.0, seed=7)
    return root


def make_mlvu(root: Path) -> Path:
    """MLVU/ inside DATA, as the Hugging Face dataset unpacks."""
    mlvu = root / "MLVU"
    write_json(mlvu / "json/1_plotQA.json", [
        {"video": "movie101_66.mp4", "duration": 246, "question": "What colour is the main character's coat?",
         "candidates": ["Red", "Blue", "Green", "Black"], "answer": "Red", "question_type": "plotQA"}])
    write_json(mlvu / "json/4_count.json", [
        {"video": "count_1.mp4", "duration": 300, "question": "How many times does the man jump?",
         "candidates": ["2", "3", "4", "5"], "answer": "4", "question_type": "count"}])
    write_video(mlvu / "video/1_plotQA/movie101_66.mp4", 3.0, seed=8)
    write_video(mlvu / "video/4_count/count_1.mp4", 3.0, seed=9)
    return root


def make_charades(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "charades_sta_test.txt").write_text("AAA01 1.0 3.0##person opens a door.\nBBB02 0.0 2.0##person sits down\n")
    write_video(root / "Charades_v1_480/AAA01.mp4", 4.0, seed=10)
    write_video(root / "Charades_v1_480/BBB02.mp4", 3.0, seed=11)
    return root


@pytest.fixture(scope="session")
def benches(tmp_path_factory) -> dict[str, Path]:
    """Every benchmark's fixture folder, written once."""
    tmp = tmp_path_factory.mktemp("benches")
    return {"mvbench": make_mvbench(tmp / "mvbench"), "videomme": make_videomme(tmp / "videomme"),
            "longvideobench": make_longvideobench(tmp / "longvideobench"), "mlvu": make_mlvu(tmp / "mlvu"),
            "charades_sta": make_charades(tmp / "charades_sta")}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny demo run (one epoch on 12 synthetic videos at 32 px), as tests/inference/test_chat.py trains it."""
    from lrc.cli import main
    from lrc.data.synth import synthesize
    from tests.conftest import tiny_override_list

    tmp = tmp_path_factory.mktemp("eval-run")
    synthesize(tmp / "corpus", videos=12, seed=3, size=32, min_seconds=3.0, max_seconds=8.0)
    assert main(["fit", str(DEMO), "--out", str(tmp / "run"), *tiny_override_list(tmp / "corpus", tmp)]) == 0
    return tmp / "run"
