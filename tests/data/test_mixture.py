"""Mixtures: data.train / data.val as a list of sources in any format, sampled and repeated, deterministic for a
seed, resumable mid-epoch, sharded by replica, and checked up front with errors that name the source."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrc.cli import main
from lrc.config import load_config, validate
from lrc.data.annotations import AnnotationError
from lrc.data.dataset import VideoDataModule
from lrc.data.formats import convert, read_annotations
from lrc.data.mixture import Source, load_split, parse_sampling, sample, source_problems, sources_of
from lrc.data.resumable import EpochShuffleSampler
from lrc.registry import SAMPLERS

DEMO = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny.yaml"


@pytest.fixture(scope="module")
def mixture(corpus, tmp_path_factory) -> Path:
    """In the corpus folder's shape: train.json (llava, <image> placeholders), chat.jsonl (sharegpt) and
    images.json (llava image records: single and two-image)."""
    root = tmp_path_factory.mktemp("mix")
    for name in ("videos", "tokenizer"):
        (root / name).symlink_to(corpus / name)
    (root / "train.jsonl").write_text((corpus / "train.jsonl").read_text())
    convert(root / "train.jsonl", root / "train.json", to="llava")
    convert(root / "train.jsonl", root / "chat.jsonl", to="sharegpt", force=True)
    (root / "images").mkdir()
    rows = []
    for k, colour in enumerate(["red", "green", "blue", "yellow", "red", "blue"]):
        rgb = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (220, 220, 30)}[colour]
        Image.fromarray(np.full((24, 24, 3), rgb, dtype=np.uint8)).save(root / "images" / f"{k}.png")
        rows.append({"id": f"img-{k}", "image": f"images/{k}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the circle?"}, {"from": "gpt", "value": colour}]})
    rows.append({"id": "pair", "image": ["images/0.png", "images/1.png"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhat colour is the circle?"}, {"from": "gpt", "value": "green"}]})
    (root / "images.json").write_text(json.dumps(rows, indent=1))
    return root


SOURCES = [{"annotations": "train.json", "sampling": "first:50%"},
           {"annotations": "chat.jsonl", "format": "sharegpt", "sampling": "end:25%"},
           {"annotations": "images.json", "sampling": "random:4", "repeat": 2}]


def test_sampling_strings():
    assert parse_sampling("all").size(10) == 10
    assert (parse_sampling("first:10%").size(21), parse_sampling("end:3").size(21)) == (3, 3)  # % rounds up
    assert parse_sampling("7") == parse_sampling("random:7") and parse_sampling(7).kind == "random"
    for bad, what in (("frist:1", "is not a sampling"), ("first:0", "keeps no record"),
                      ("random:150%", "oversample with repeat"), ("first:-1", "is not a sampling")):
        with pytest.raises(ValueError, match=what):
            parse_sampling(bad)


def test_each_sampling_keeps_the_right_records(mixture):
    records = read_annotations(mixture / "train.json").records
    ids = [r.id for r in records]
    assert [r.id for r in sample(records, parse_sampling("first:25%"), 0, 0, "s")] == ids[:len(ids) // 4]
    assert [r.id for r in sample(records, parse_sampling("end:5"), 0, 0, "s")] == ids[-5:]
    drawn = [r.id for r in sample(records, parse_sampling("random:10"), 0, 0, "s")]
    assert len(set(drawn)) == 10 and drawn == [i for i in ids if i in drawn]  # file order kept
    assert drawn == [r.id for r in sample(records, parse_sampling("10"), 0, 0, "s")]  # a function of the seed
    assert drawn != [r.id for r in sample(records, parse_sampling("10"), 1, 0, "s")]
    assert drawn != [r.id for r in sample(records, parse_sampling("10"), 0, 1, "s")]  # and of the source's place
    with pytest.raises(AnnotationError, match=f"s: sampling asks for {len(ids) + 1} records but the file has"):
        sample(records, parse_sampling(str(len(ids) + 1)), 0, 0, "s")


def test_a_split_from_three_formats_with_counts(mixture):
    records, counts = load_split(sources_of(SOURCES, mixture, "train"), seed=0)
    n = len(read_annotations(mixture / "train.json").records)
    assert [(c.name, c.format, c.records, c.sampled, c.used) for c in counts] == [
        ("data.train[0]", "llava", n, n // 2, n // 2), ("data.train[1]", "sharegpt", n, n // 4, n // 4),
        ("data.train[2]", "llava", 7, 4, 8)]
    assert counts[0].media == {"video": n // 2} and counts[2].media == {"image": 4}
    assert len(records) == n // 2 + n // 4 + 8
    assert records[n // 2 + n // 4:][:4] == records[n // 2 + n // 4 + 4:]  # repeat: the same records again
    again, _ = load_split(sources_of(SOURCES, mixture, "train"), seed=0)
    assert [r.id for r in again] == [r.id for r in records]


def test_source_problems_name_the_source(mixture):
    bad = [{"annotations": "train.json"}, {"annotations": "nope.json"}, {"annotations": "chat.jsonl", "root": "nowhere"},
           {"annotations": "images.json", "sampling": "half"}]
    problems = source_problems(bad, mixture, "train")
    assert len(problems) == 3
    assert problems[0].startswith(f"data.train[1] ({mixture / 'nope.json'}): annotation file") and "does not exist" in problems[0]
    assert problems[1].startswith("data.train[2] (") and "root" in problems[1] and "is not a folder" in problems[1]
    assert problems[2].startswith("data.train[3] (") and "'half' is not a sampling" in problems[2]
    assert source_problems("train.jsonl", mixture, "train") == []
    with pytest.raises(AnnotationError, match=r"data.val\[0\] \(.*\): annotation file .* does not exist"):
        load_split(sources_of([{"annotations": "nope.json"}], mixture, "val"))


def _module(mixture, prompts, seed=0, **kw):
    sampler = SAMPLERS.get("uniform")(num_frames=2)
    return VideoDataModule(sources_of(SOURCES, mixture, "train"), sources_of("train.jsonl", mixture, "val"),
                           sampler=sampler, prompts=prompts, image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                           batch_size=3, seed=seed, cache_frames=True, **kw)


@pytest.fixture(scope="module")
def prompts(corpus):
    from transformers import AutoTokenizer

    from lrc.data.prompt import PromptBuilder, prepare_tokenizer

    return PromptBuilder(prepare_tokenizer(AutoTokenizer.from_pretrained(str(corpus / "tokenizer"))), tokens_per_frame=2)


def test_mixed_batches_resume_mid_epoch(mixture, prompts):
    whole = [b["ids"] for b in _module(mixture, prompts).train_dataloader()]
    assert any("image" in b and "video" in b for b in
               (batch["media"] for batch in _module(mixture, prompts).train_dataloader()))
    first = _module(mixture, prompts)
    loader = first.train_dataloader()
    done = []
    for batch in loader:
        done.append(batch["ids"])
        if len(done) == 3:
            break
    state = first.state_dict()
    resumed = _module(mixture, prompts)
    resumed.load_state_dict(state)
    rest = [b["ids"] for b in resumed.train_dataloader()]
    assert done + rest == whole
    other = [b["ids"] for b in _module(mixture, prompts, seed=1).train_dataloader()]
    assert sorted(sum(other, [])) != sorted(sum(whole, []))  # random:4 of the images depends on run.seed


def test_replicas_share_one_mixture_and_split_it(mixture, prompts):
    a, b = _module(mixture, prompts), _module(mixture, prompts)
    ids = [r.id for r in a.dataset("train").records]
    assert ids == [r.id for r in b.dataset("train").records]  # every rank builds the same list
    size = len(ids)
    shards = [EpochShuffleSampler(size, seed=0, num_replicas=2, rank=r).order(0) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) or size % 2  # disjoint (an odd split repeats one sample)
    assert set(shards[0]) | set(shards[1]) == set(range(size))
    counts = a.source_counts()
    assert [c["name"] for c in counts["train"]] == ["data.train[0]", "data.train[1]", "data.train[2]"]


def test_config_validation_and_the_resolved_sources(tmp_path, capsys):
    cfg = validate(load_config(DEMO, ["data.train=[{annotations: a.json, sampling: 'first:10%'}, {annotations: b.jsonl}]"]))
    assert cfg["data"]["train"] == [
        {"annotations": "a.json", "sampling": "first:10%", "root": None, "format": "auto", "repeat": 1},
        {"annotations": "b.jsonl", "root": None, "format": "auto", "sampling": "all", "repeat": 1}]
    code = main(["validate", str(DEMO), "data.train=[{annotations: a.json}, {annotations: b.json, sampling: 'frist:1'}]",
                 "data.val=[{root: x}]"])
    err = capsys.readouterr().err
    assert code == 2
    assert "command line: data.train: source [1] (b.json): sampling: 'frist:1' is not a sampling" in err
    assert "command line: data.val: source [0]: annotations: required" in err
    code = main(["validate", str(DEMO), "data.train=[{annotations: a.json, format: llama}]"])
    assert code == 2 and "'llama' is not one of auto, lrc, llava, sharegpt" in capsys.readouterr().err


def test_fit_refuses_a_missing_source_before_building(mixture, tiny_overrides, tmp_path, capsys):
    code = main(["fit", str(DEMO), *tiny_overrides, f"data.root={mixture}",
                 "data.train=[{annotations: train.json}, {annotations: gone.jsonl}]", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"data.train[1] ({mixture / 'gone.jsonl'}): annotation file" in err and "does not exist" in err
    assert not (tmp_path / "run").exists()


def test_data_check_reads_a_config_mixture(mixture, tiny_overrides, capsys, tmp_path):
    sources = json.dumps(SOURCES).replace('"', "'")
    code = main(["data", "check", "--config", str(DEMO), f"data.root={mixture}", f"data.train={sources}",
                 "data.val=train.jsonl", "--workers", "2", "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert [s["name"] for s in report["sources"]] == ["data.train[0]", "data.train[1]", "data.train[2]", "data.val"]
    used = load_split(sources_of(SOURCES, mixture, "train") + sources_of("train.jsonl", mixture, "val"))[0]
    images = {str(p) for r in used if r.images for p in r.images}
    videos = {str(r.video) for r in used if r.video}
    assert report["media"] == {"total": len(images) + len(videos), "video": len(videos), "frames": 0, "gif": 0,
                               "image": len(images)}
    assert report["unreadable"] == 0 and report["resolution"]["most_common"][0][0] == "32x32"
    assert "sources:" in out and "data.train[2]" in out and "random:4 of 7" in out
