"""`lrc data check` on files of any format: every video, frame folder, GIF and image decoded by parallel workers,
the unreadable ones by reason, and the spread of durations, frame rates and resolutions."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrc.cli import main
from lrc.data.check import check_annotations
from lrc.data.video import VideoFile


def _corpus_with_every_kind(corpus: Path, root: Path) -> tuple[Path, Path]:
    """A llava array of videos (one missing), frame folders (one empty) and a GIF, and a sharegpt file of images
    (one not an image, one of another size)."""
    root.mkdir()
    videos = sorted((corpus / "videos").glob("*.mp4"))[:3]
    folder = root / "frames"
    folder.mkdir()
    with VideoFile(videos[0]) as v:
        frames = v.get_frames(list(range(8)))
    for k, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{k}.jpg")
    (root / "empty").mkdir()
    Image.fromarray(frames[0]).save(root / "clip.gif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], duration=100)
    turn = lambda tag: [{"from": "human", "value": f"{tag}\nWhat?"}, {"from": "gpt", "value": "red"}]  # noqa: E731
    llava = [{"id": f"v{k}", "video": str(v), "conversations": turn("<image>")} for k, v in enumerate(videos)]
    llava += [{"id": "gone", "video": "gone.mp4", "conversations": turn("<image>")},
              {"id": "folder", "video": "frames", "fps": 4, "conversations": turn("<image>")},
              {"id": "folder-again", "video": "frames", "fps": 4, "conversations": turn("<image>")},
              {"id": "empty", "video": "empty", "conversations": turn("<image>")},
              {"id": "gif", "video": "clip.gif", "conversations": turn("<image>")}]
    (root / "videos.json").write_text(json.dumps(llava, indent=2))
    Image.fromarray(np.zeros((24, 40, 3), np.uint8)).save(root / "wide.png")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "square.png")
    (root / "fake.png").write_text("not an image")
    rows = [{"messages": [{"role": "user", "content": "<image>What?"}, {"role": "assistant", "content": "red"}],
             "images": [name]} for name in ("wide.png", "square.png", "fake.png")]
    rows.append({"messages": [{"role": "user", "content": "<image><image>What?"}, {"role": "assistant", "content": "x"}],
                 "images": ["square.png", "fake.png"]})
    (root / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "videos.json", root / "images.jsonl"


def test_every_kind_of_media_checked_in_parallel(corpus, tmp_path):
    videos, images = _corpus_with_every_kind(corpus, tmp_path / "c")
    result = check_annotations([videos, images], workers=2, timeout_s=20)
    assert result.records == 12 and result.videos == 10 and result.workers == 2
    assert result.kinds() == {"video": 4, "frames": 2, "gif": 1, "image": 3}
    root = tmp_path / "c"
    assert result.bad_videos == {str(root / "gone.mp4"): "file not found",
                                 str(root / "empty"): "no frames (.jpg, .jpeg, .png files) in the folder",
                                 str(root / "fake.png"): "not an image Pillow can read"}
    assert {s.id for s in result.skipped} == {"gone", "empty", "images-2", "images-3"}
    spread = result.spread()
    assert spread["fps"]["min"] == 4.0 and spread["fps"]["max"] >= 4.0  # the frame folder at its record's fps
    folder = result.info[str(root / "frames")]
    assert (folder["frames"], folder["fps"], folder["duration"], folder["kind"]) == (8, 4.0, 2.0, "frames")
    assert result.info[str(root / "clip.gif")]["kind"] == "gif"
    assert ["40x24", 1] in spread["resolution"]["most_common"] and ["32x32", 6] in spread["resolution"]["most_common"]
    summary = result.summary()
    for text in ("12 records, 10 media (4 video files, 2 frame folders, 1 GIFs, 3 images)", "3 unreadable",
                 "used by 4 record(s)", "file not found", "not an image Pillow can read", "duration ", "fps ",
                 "resolution 32x32 (6)"):
        assert text in summary, (text, summary)
    alone = check_annotations([videos, images], workers=1, timeout_s=20)
    assert alone.bad_videos == result.bad_videos and alone.info == result.info  # the same findings either way


def test_the_cli_report_and_progress_bar(corpus, tmp_path, capsys):
    videos, images = _corpus_with_every_kind(corpus, tmp_path / "c")
    report = tmp_path / "report.json"
    code = main(["data", "check", str(videos), str(images), "--workers", "2", "--report", str(report)])
    assert code == 2
    found = json.loads(report.read_text())
    assert found["records"] == 12 and found["readable"] == 7 and found["unreadable"] == 3
    assert found["media"] == {"total": 10, "video": 4, "frames": 2, "gif": 1, "image": 3}
    assert found["unreadable_by_reason"] == {"file not found": 1, "no frames (.jpg, .jpeg, .png files) in the folder": 1,
                                             "not an image Pillow can read": 1}
    assert set(found["duration_s"]) == {"min", "median", "max", "mean"} and found["seconds"] >= 0
    assert [s["format"] for s in found["sources"]] == ["llava", "sharegpt"]
    assert {row["id"] for row in found["bad"]} == {"gone", "empty", "images-2", "images-3"}
    assert all(set(row) == {"id", "video", "reason"} for row in found["bad"])
    # the progress bar goes to stderr: on a terminal by default, always when asked
    capsys.readouterr()
    check_annotations([videos], workers=1, progress=True)
    err = capsys.readouterr().err
    assert "lrc data check" in err and "7/7" in err  # 3 videos, the missing one, 2 folders, the GIF
    assert main(["data", "check", str(videos), "--no-progress", "--workers", "1"]) == 2
    assert "lrc data check:" not in capsys.readouterr().err


def test_the_format_and_root_can_be_named(corpus, tmp_path, capsys):
    rows = [{"id": "a", "video": "videos/" + sorted((corpus / "videos").glob("*.mp4"))[0].name,
             "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}]
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    assert main(["data", "check", str(path), "--root", str(corpus), "--format", "llava", "--no-progress"]) == 0
    assert main(["data", "check", str(path), "--format", "lrc"]) == 2
    assert f"{path}:1: conversations: " in capsys.readouterr().err


CRASHING_PROBE = """
import os

from lrc.data.check import probe


def crash_on_poison(task):
    if task[0].endswith("poison.mp4"):
        os._exit(11)
    return probe(task)
"""


@pytest.fixture
def crash_on_poison(tmp_path, monkeypatch):
    """A probe whose process dies on one file, as a decoder that segfaults on a corrupt file would; in a module
    of its own on sys.path, so that spawned workers can import it (test modules are not importable there)."""
    import importlib

    folder = tmp_path / "probe_module"
    folder.mkdir()
    (folder / "lrc_crashing_probe.py").write_text(CRASHING_PROBE)
    monkeypatch.syspath_prepend(str(folder))
    return importlib.import_module("lrc_crashing_probe").crash_on_poison


def test_a_decoder_crash_is_reported_and_the_rest_still_checked(corpus, tmp_path, crash_on_poison):
    from tqdm import tqdm

    from lrc.data.check import _run_pool

    videos = [str(p) for p in sorted((corpus / "videos").glob("*.mp4"))[:4]]
    tasks = [(p, "video", 16, 20.0, None, 1.0) for p in videos[:2] + [str(tmp_path / "poison.mp4")] + videos[2:]]
    found: list = []
    _run_pool(tasks, 2, found, tqdm(disable=True), work=crash_on_poison)
    by_path = {f["path"]: f for f in found}
    assert set(by_path) == {t[0] for t in tasks}
    assert by_path[str(tmp_path / "poison.mp4")]["reason"] == "decoder crashed: the process reading it died"
    assert all(by_path[p]["ok"] for p in videos)


def test_a_crash_before_any_answer_is_still_isolated(tmp_path, crash_on_poison):
    # the pool breaks before any task came back: that must not be taken for "workers cannot start here" and
    # the file probed in this process (which would end the command)
    from tqdm import tqdm

    from lrc.data.check import _run_pool

    found: list = []
    _run_pool([(str(tmp_path / "poison.mp4"), "video", 16, 20.0, None, 1.0)], 1, found, tqdm(disable=True),
              work=crash_on_poison)
    assert [f["reason"] for f in found] == ["decoder crashed: the process reading it died"]
