"""Bring your own data, end to end: a mixture of an LLaVA JSON array (videos with <image> placeholders, frame
folders among them), a ShareGPT JSONL (videos and a GIF) and an image set (single- and two-image records) is
checked by `lrc data check`, trains with `lrc fit` and evaluates to the end, with the per-source counts in the
run folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrc.cli import main
from lrc.data.formats import convert
from lrc.data.synth import synthesize
from lrc.data.video import VideoFile

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mix")
    synthesize(root, videos=10, seed=5, size=32, min_seconds=3.0, max_seconds=8.0, format="llava", images=8,
               frame_folders=3)
    train = json.loads((root / "train.json").read_text())
    assert all("<image>" in r["conversations"][0]["value"] for r in train)  # LLaVA-Video-178K's placeholder
    convert(root / "train.json", root / "chat.jsonl", to="sharegpt")
    # one more sharegpt record whose video is a GIF made from one of the MP4s
    first = next(r for r in train if r["video"].endswith(".mp4"))
    with VideoFile(root / first["video"]) as video:
        frames = video.get_frames(list(range(0, video.num_frames, 2)))
        fps = video.fps / 2
    (root / "gifs").mkdir()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(root / "gifs" / "clip.gif", save_all=True, append_images=images[1:], duration=int(1000 / fps))
    with (root / "chat.jsonl").open("a") as fh:
        fh.write(json.dumps({"messages": [{"role": "user", "content": first["conversations"][0]["value"]
                                           .replace("<image>", "<video>")},
                                          {"role": "assistant", "content": first["conversations"][1]["value"]}],
                             "videos": ["gifs/clip.gif"], "task": "mcq", "options": first["options"],
                             "answer": first["answer"], "question_type": "gif"}) + "\n")
    return root


def _overrides(tiny: list[str], mix: Path) -> list[str]:
    train = [{"annotations": "train.json", "sampling": "first:50%"},
             {"annotations": "chat.jsonl", "format": "sharegpt", "sampling": "end:50%"},
             {"annotations": "train_images.json", "repeat": 2}]
    val = [{"annotations": "val.json"}, {"annotations": "val_images.json"}]
    quote = lambda v: json.dumps(v).replace('"', "'")  # noqa: E731 - a YAML flow list on the command line
    return [o for o in tiny if not o.startswith("data.root=")] + [
        f"data.root={mix}", f"data.tokenizer={mix / 'tokenizer'}", f"data.train={quote(train)}",
        f"data.val={quote(val)}", "data.batch_size=3", "data.max_length=512"]


@pytest.mark.slow
def test_check_then_fit_a_mixture_of_three_formats(mix, tiny_overrides, tmp_path, capsys):
    overrides = _overrides(tiny_overrides, mix)
    meta = json.loads((mix / "meta.json").read_text())
    train_videos = {r["video"] for r in json.loads((mix / "train.json").read_text())}
    assert set(meta["frame_folders"]) & train_videos, "the fixture must train on a frame folder"

    code = main(["data", "check", "--config", str(DEMO), *overrides, "--workers", "2",
                 "--report", str(tmp_path / "check.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["unreadable"] == 0 and report["media"]["frames"] >= 1 and report["media"]["gif"] == 1
    assert report["media"]["image"] == 8 and report["media"]["video"] >= 5
    assert [(s["name"], s["format"]) for s in report["sources"]] == [
        ("data.train[0]", "llava"), ("data.train[1]", "sharegpt"), ("data.train[2]", "llava"),
        ("data.val[0]", "llava"), ("data.val[1]", "llava")]
    assert "frame folders" in out and "GIFs" in out and "images" in out and "resolution 32x32" in out

    run = tmp_path / "run"
    assert main(["fit", str(DEMO), *overrides, "--out", str(run)]) == 0
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    sources = json.loads((run / "data_sources.json").read_text())
    val_records = sum(len(json.loads((mix / f).read_text())) for f in ("val.json", "val_images.json"))
    assert metrics["data/skipped"] == 0 and metrics["val/mcq_count"] == val_records
    assert "val/mcq_acc_image_colour" in metrics and "val/mcq_acc_colour" in metrics
    assert np.isfinite(metrics["val/loss"]) and metrics["train/steps"] > 0
    train = sources["train"]
    n = len(json.loads((mix / "train.json").read_text()))
    assert [(s["name"], s["format"], s["records"], s["sampled"], s["used"]) for s in train] == [
        ("data.train[0]", "llava", n, n // 2 + n % 2, n // 2 + n % 2),
        ("data.train[1]", "sharegpt", n + 1, (n + 2) // 2, (n + 2) // 2),
        ("data.train[2]", "llava", meta["image_records"]["train"], meta["image_records"]["train"],
         2 * meta["image_records"]["train"])]
    assert train[2]["media"] == {"image": meta["image_records"]["train"]}
    assert [s["name"] for s in sources["val"]] == ["data.val[0]", "data.val[1]"]


@pytest.mark.slow
def test_two_ranks_share_the_mixture(mix, tiny_overrides, tmp_path):
    """Under DDP (2 gloo ranks, Lightning's launcher) every rank reads the same sources and takes its shard:
    the run trains and validation covers the mixed split exactly once."""
    import os
    import subprocess
    import sys

    from lrc.train.run import LAUNCH_ENV

    driver = tmp_path / "driver.py"
    driver.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom lrc.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    run = tmp_path / "ddp"
    done = subprocess.run([sys.executable, str(driver), "fit", str(DEMO), *_overrides(tiny_overrides, mix),
                           "--out", str(run), "trainer.max_steps=4", "distributed.strategy=ddp",
                           "distributed.devices=2"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    val_records = sum(len(json.loads((mix / f).read_text())) for f in ("val.json", "val_images.json"))
    assert metrics["val/mcq_count"] == val_records and metrics["train/steps"] == 4
    assert [s["name"] for s in json.loads((run / "data_sources.json").read_text())["train"]] == [
        "data.train[0]", "data.train[1]", "data.train[2]"]


@pytest.mark.slow
def test_a_packed_fit_on_the_mixture(mix, tiny_overrides, tmp_path, capsys):
    """Dynamic packing plans image and video samples alike (an image record's length needs no decoding)."""
    run = tmp_path / "packed"
    assert main(["fit", str(DEMO), *_overrides(tiny_overrides, mix), "data.packing.enabled=true",
                 "data.packing.max_tokens=1024", "--out", str(run)]) == 0
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data/skipped"] == 0 and metrics["train/steps"] > 0 and np.isfinite(metrics["val/loss"])
