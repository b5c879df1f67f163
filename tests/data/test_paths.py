"""Where media may be (lrc/data/paths.py, docs/data.md "Where media may be"): inside data.root, symlinks followed;
an absolute path elsewhere, a ../ out of it, a symlink that leaves it, /proc and /dev files are skipped with a
stable reason unless data.allow_outside_root; devices, FIFOs and symlink loops are never opened. Before issue 15
such records were opened as given."""

import json
import os
import shutil
from pathlib import Path

from lrc.data.annotations import load_annotations
from lrc.data.paths import MediaPolicy, stat_problem

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


def test_the_policy_judges_where_a_path_leads(tmp_path):
    root = tmp_path / "corpus"
    (root / "videos").mkdir(parents=True)
    inside = root / "videos" / "a.mp4"
    inside.write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(b"x")
    (root / "videos" / "out.mp4").symlink_to(elsewhere)
    (root / "videos" / "in.mp4").symlink_to(inside)
    policy = MediaPolicy(root)
    assert policy.problem(inside) is None and policy.problem(root / "videos" / "in.mp4") is None
    assert policy.problem(root / "videos" / ".." / "videos" / "a.mp4") is None
    for path in (elsewhere, root / ".." / "elsewhere.mp4", root / "videos" / "out.mp4", Path("/proc/self/environ"),
                 Path("/etc/passwd")):
        why = policy.problem(path)
        assert why is not None and why.startswith("outside data.root (it resolves to ")
        assert "data.allow_outside_root=true" in why
    assert policy.problem(elsewhere) == policy.problem(elsewhere)  # the same words every time
    assert MediaPolicy(root, allow_outside=True).problem(elsewhere) is None
    assert MediaPolicy(None).problem(elsewhere) is None  # no root given: no policy (lrc data check, niah)


def test_what_a_path_names(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    os.mkfifo(tmp_path / "fifo.mp4")
    assert stat_problem(tmp_path / "missing.mp4") == "file not found"
    assert stat_problem(tmp_path / "empty.mp4") == "zero bytes"
    assert stat_problem(tmp_path / "a").startswith("symlink loop")
    assert stat_problem(tmp_path / "fifo.mp4") == "not a regular file"
    assert stat_problem("/dev/zero") == "not a regular file"
    assert stat_problem(tmp_path) == "not a regular file" and stat_problem(tmp_path, allow_folder=True) is None


def test_a_dataset_skips_media_outside_its_root_with_the_reason(corpus, tmp_path):
    """Records whose video is an absolute path elsewhere, a ../ escape or /dev/zero: skipped, each with its
    reason, none opened; data.allow_outside_root=true reads the one that is a video."""
    from lrc.data.dataset import VideoConversationDataset
    from lrc.data.prompt import PromptBuilder
    from lrc.registry import SAMPLERS
    from lrc.train.build import build_tokenizer
    from lrc.config import load_config, validate

    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    outside = tmp_path / "outside.mp4"
    shutil.copy(next((root / "videos").glob("*.mp4")), outside)
    lines = (root / "val.jsonl").read_text().splitlines()[:4]
    records = [json.loads(line) for line in lines]
    records[1]["video"] = str(outside)  # absolute, elsewhere
    records[2]["video"] = "../outside.mp4"  # climbs out
    records[3]["video"] = "/dev/zero"
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recs = load_annotations(root / "val.jsonl")
    cfg = validate(load_config(DEMO, [f"data.root={root}", "data.synth_videos=null"]))
    prompts = PromptBuilder(build_tokenizer(cfg), tokens_per_frame=2)

    def items(allow):
        ds = VideoConversationDataset(recs, SAMPLERS.get("uniform")(4), prompts, image_size=16, mean=(0.5,) * 3,
                                      std=(0.5,) * 3, media_root=root, allow_outside_root=allow)
        return [ds[i] for i in range(len(recs))]

    strict = items(False)
    assert "skipped" not in strict[0]
    for item, path in zip(strict[1:], [outside, outside, Path("/dev/zero")]):
        assert item["skipped"].reason == f"outside data.root (it resolves to {path}); lrc reads media inside " \
                                         f"data.root only: move the file under {root.resolve()}, or set " \
                                         "data.allow_outside_root=true to read media anywhere"
    loose = items(True)
    assert "skipped" not in loose[1] and "skipped" not in loose[2]
    assert loose[3]["skipped"].reason == "not a regular file"  # a device is never opened, whatever the setting
