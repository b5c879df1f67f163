"""The synthetic corpus: real decodable MP4s whose pixels match their QA, and its tokenizer."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from lrc.data.annotations import load_annotations
from lrc.data.synth import build_corpus_tokenizer, synthesize
from lrc.data.synth.corpus import SPECIAL_TOKENS
from lrc.data.synth.scenes import DIRECTIONS, FPS_CHOICES, PALETTE, SHAPES, video_spec
from lrc.data.video import VideoFile, decord_available

KEYS = {"id", "video", "duration", "fps", "task", "question_type", "conversations", "options", "answer", "objects"}
SMALL = dict(videos=6, seed=0, min_seconds=1.5, max_seconds=4.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    return out, synthesize(out, **SMALL)


def _records(out: Path, split: str | None = None) -> list[dict]:
    splits = [split] if split else ["train", "val"]
    return [json.loads(line) for s in splits for line in (out / f"{s}.jsonl").read_text().splitlines()]


def _videos(out: Path) -> dict[str, dict]:
    """One record per video (objects, duration and fps are the same in each of its questions)."""
    return {r["video"]: r for r in _records(out)}


def _option_texts(prompt: str) -> dict[str, str]:
    return dict(re.findall(r"^\(([A-Z])\) (.+)$", prompt, flags=re.M))


def _colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    return np.abs(frame.astype(int) - np.array(PALETTE[colour])).max(-1) < 60


def test_summary_and_meta(corpus):
    out, summary = corpus
    assert summary == {"videos": 6, "train": len(_records(out, "train")), "val": len(_records(out, "val")),
                       "out_dir": str(out)}
    assert summary["train"] + summary["val"] == 6 * 4
    assert summary["val"] >= 4  # at least one video (4 questions) held out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["videos"] == 6 and meta["size"] == 64
    assert meta["question_types"] == {"colour": 6, "shape": 6, "direction": 6, "count": 6}
    assert meta["generator"].startswith("lrc.data.synth/")
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"synth-{i:06d}.mp4" for i in range(6)]


def test_split_is_by_video(corpus):
    out, _ = corpus
    train = {r["video"] for r in _records(out, "train")}
    val = {r["video"] for r in _records(out, "val")}
    assert train and val and not train & val


def test_records_schema_and_answers_match_the_objects(corpus):
    out, _ = corpus
    records = _records(out)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert set(r) == KEYS, r["id"]
        assert r["id"] == f"{Path(r['video']).stem}-{r['question_type']}"
        assert (out / r["video"]).is_file()
        assert r["task"] == "mcq" and r["question_type"] in ("colour", "shape", "direction", "count")
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt" and gpt["value"] == r["answer"]
        assert human["value"].startswith("<video>\n") and human["value"].count("<video>") == 1
        assert human["value"].endswith("Answer with the option's letter from the given choices directly.")
        options = _option_texts(human["value"])
        assert r["options"] == list(options) == [chr(ord("A") + i) for i in range(len(options))]
        assert r["answer"] in r["options"]
        answer = options[r["answer"]]
        assert len(set(options.values())) == len(options), "options must be distinct"

        objects = r["objects"]
        assert 1 <= len(objects) <= 3
        assert len({o["colour"] for o in objects}) == len(objects), "colours are distinct within a video"
        assert len({o["direction"] for o in objects}) == 1, "all objects move the same way"
        question = human["value"].splitlines()[1]
        if r["question_type"] == "colour":
            shape = re.match(r"What colour is the (\w+)\?", question).group(1)
            named = [o for o in objects if o["shape"] == shape]
            assert len(named) == 1 and answer == named[0]["colour"] and len(options) == 4
            assert set(options.values()) <= set(PALETTE)
        elif r["question_type"] == "shape":
            colour = re.match(r"What shape is the (\w+) object\?", question).group(1)
            assert answer == next(o["shape"] for o in objects if o["colour"] == colour)
            assert sorted(options.values()) == sorted(SHAPES)
        elif r["question_type"] == "direction":
            assert answer == objects[0]["direction"] and sorted(options.values()) == sorted(DIRECTIONS)
        else:
            assert answer == str(len(objects)) and sorted(options.values()) == ["1", "2", "3"]


def test_annotations_load_with_lrc_reader(corpus):
    out, _ = corpus
    records = load_annotations(out / "train.jsonl") + load_annotations(out / "val.jsonl")
    assert len(records) == 24 and all(r.video.is_file() for r in records)


def test_answer_letters_are_not_degenerate(corpus):
    out, _ = corpus
    letters = collections.Counter(r["answer"] for r in _records(out))
    assert len(letters) >= 3
    assert max(letters.values()) <= 0.5 * sum(letters.values())


def test_answer_letters_balanced_per_question_type(tmp_path):
    # answer positions come from per-type decks: in a split, each letter is equally often right
    synthesize(tmp_path, videos=12, seed=1, val_fraction=0.25, min_seconds=1.0, max_seconds=1.5)
    train = _records(tmp_path, "train")  # 9 videos
    for qtype, options in [("shape", "ABC"), ("count", "ABC")]:
        counts = collections.Counter(r["answer"] for r in train if r["question_type"] == qtype)
        assert counts == {letter: 3 for letter in options}, qtype


@pytest.mark.parametrize("backend", [pytest.param("decord", marks=pytest.mark.skipif(
    not decord_available(), reason="decord is not installed")), "pyav"])
def test_every_video_decodes_and_matches_its_annotation(corpus, backend):
    out, _ = corpus
    for rel, r in _videos(out).items():
        with VideoFile(out / rel, size=32, backend=backend) as v:
            assert v.backend == backend
            assert v.fps == pytest.approx(r["fps"])
            assert abs(v.num_frames - round(r["duration"] * r["fps"])) <= 1, rel
            assert v.duration == pytest.approx(r["duration"], abs=1.5 / r["fps"])
            frames = v.get_frames([0, v.num_frames // 2, v.num_frames - 1])
        assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8


def test_pixels_show_the_annotated_colours(corpus):
    out, _ = corpus
    for rel, r in _videos(out).items():
        with VideoFile(out / rel) as v:
            frame = v.get_frames([0])[0]
        present = {o["colour"] for o in r["objects"]}
        for colour in PALETTE:
            share = _colour_mask(frame, colour).mean()
            if colour in present:
                assert share > 0.01, f"{rel}: {colour} object covers only {share:.1%} of frame 0"
            else:
                assert share < 0.002, f"{rel}: {colour} is not in the video but covers {share:.1%}"
        # the background is dark and fills most of the frame
        assert (frame.max(-1) < 60).mean() > 0.4


def test_objects_move_in_the_annotated_direction(corpus):
    out, _ = corpus
    step = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    for rel, r in _videos(out).items():
        with VideoFile(out / rel) as v:
            first, last = v.get_frames([0, v.num_frames - 1])
        for o in r["objects"]:
            start = np.argwhere(_colour_mask(first, o["colour"])).mean(0)
            end = np.argwhere(_colour_mask(last, o["colour"])).mean(0)
            (dy, dx), (sy, sx) = end - start, step[o["direction"]]
            along, across = dy * sy + dx * sx, abs(dy * sx - dx * sy)
            assert along > 64 * 0.25, f"{rel}: {o} moved only {along:.1f} px along its direction"
            assert across < 3, f"{rel}: {o} drifted {across:.1f} px sideways"


def test_deterministic_for_a_seed(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    synthesize(again, **SMALL)
    for name in ("train.jsonl", "val.jsonl", "meta.json", "tokenizer/tokenizer.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    for mp4 in (out / "videos").iterdir():
        assert (again / "videos" / mp4.name).read_bytes() == mp4.read_bytes(), mp4.name

    other = tmp_path / "other"
    synthesize(other, **{**SMALL, "seed": 1})
    assert (other / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()


def test_durations_and_frame_rates_at_default_settings():
    # the spec only (no encoding): most videos short, a tail of minutes-long ones at low fps
    specs = [video_spec(np.random.default_rng([0, 100, i]), 64, 3.0, 180.0) for i in range(300)]
    seconds = np.array([s["num_frames"] / s["fps"] for s in specs])
    assert seconds.min() >= 2.9 and seconds.max() <= 180.5
    assert 0.7 < (seconds <= 20).mean() < 0.9
    assert (seconds > 60).sum() >= 10
    assert {s["fps"] for s in specs} == set(FPS_CHOICES)
    assert all(s["fps"] <= 6 for s, d in zip(specs, seconds) if d > 60)


@pytest.mark.parametrize("kwargs, message", [
    (dict(videos=0), "videos"),
    (dict(size=63), "size"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(min_seconds=5.0, max_seconds=2.0), "min_seconds"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize(tmp_path, **kwargs)


# --- tokenizer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(corpus):
    out, _ = corpus
    return AutoTokenizer.from_pretrained(str(out / "tokenizer"))


def test_special_tokens_are_single_ids_in_order(tokenizer):
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == expected_id
        assert tokenizer(token, add_special_tokens=False).input_ids == [expected_id]
    assert (tokenizer.pad_token, tokenizer.unk_token, tokenizer.bos_token, tokenizer.eos_token) == (
        "<pad>", "<unk>", "<s>", "</s>")
    # glued to words, special tokens are still never split
    ids = tokenizer("x<IMG_CONTEXT><IMG_CONTEXT>Frame", add_special_tokens=False).input_ids
    assert ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 2


def test_prompt_round_trips_with_newlines_and_image_slots(tokenizer):
    prompt = ("<|im_start|>user\nThe video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it.\n"
              "Frame1: <IMG_CONTEXT><IMG_CONTEXT>\nFrame10: <IMG_CONTEXT><IMG_CONTEXT>\n"
              "What colour is the circle?\n(A) red\n(B) green\nAnswer with the option's letter from the given "
              "choices directly.<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == prompt
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count("\n") == prompt.count("\n")  # every line break is its own token
    assert tokens[tokens.index("Frame"):][:4] == ["Frame", "1", ":", " "]
    assert [" 1", "2", ".", "5", "0"] == tokens[tokens.index(" for") + 1:][:5]  # single digits


def test_every_corpus_text_encodes_without_unknowns(corpus, tokenizer):
    out, _ = corpus
    for r in _records(out):
        for turn in r["conversations"]:
            ids = tokenizer(turn["value"], add_special_tokens=False).input_ids
            assert tokenizer.unk_token_id not in ids, turn["value"]
            assert tokenizer.decode(ids) == turn["value"]
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        assert len(tokenizer(letter, add_special_tokens=False).input_ids) == 1


def test_works_with_lrc_prompt_builder(corpus, tokenizer):
    from lrc.data.prompt import PromptBuilder, prepare_tokenizer

    out, _ = corpus
    size = len(tokenizer)
    prompts = PromptBuilder(prepare_tokenizer(tokenizer), tokens_per_frame=3)
    assert len(tokenizer) == size, "the corpus tokenizer already has every token lrc's prompt needs"
    r = _records(out)[0]
    enc = prompts.encode_conversation(r["conversations"], r["duration"], num_frames=8, sample_id=r["id"])
    assert tokenizer.unk_token_id not in enc.input_ids
    assert enc.input_ids.count(tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")) == 8 * 3
    assert [i for i in enc.labels if i != -100][0] == tokenizer.convert_tokens_to_ids(r["answer"])


def test_build_corpus_tokenizer_rebuilds_the_same_vocabulary(corpus, tmp_path):
    out, _ = corpus
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train.jsonl", "val.jsonl"):
        (copy / name).write_bytes((out / name).read_bytes())
    rebuilt = build_corpus_tokenizer(copy)
    assert rebuilt.get_vocab() == AutoTokenizer.from_pretrained(str(out / "tokenizer")).get_vocab()
    assert (copy / "tokenizer" / "tokenizer.json").is_file()


def test_build_corpus_tokenizer_needs_annotations(tmp_path):
    with pytest.raises(FileNotFoundError, match="jsonl"):
        build_corpus_tokenizer(tmp_path)


def test_text_answers_and_multi_turn_training_records(tmp_path):
    from lrc.data.annotations import load_annotations
    from lrc.data.synth import synthesize

    synthesize(tmp_path, videos=4, seed=1, size=32, min_seconds=2.0, max_seconds=3.0,
               answer_style="text", multi_turn_train=True)
    val = load_annotations(tmp_path / "val.jsonl")
    for rec in val:  # val stays one MCQ per record, answered with the option's text
        assert rec.task == "mcq" and rec.answer in rec.options and rec.answer == rec.conversations[-1]["value"]
        assert all(len(o) > 1 or o.isdigit() for o in rec.options)
    train = load_annotations(tmp_path / "train.jsonl")
    assert all(len(r.conversations) == 8 and r.task == "chat" for r in train)  # 4 questions, 4 answers
    assert sum(t["value"].count("<video>") for t in train[0].conversations) == 1


# --- other formats, images, frame folders (`lrc data synth --format llava --images N --frame-folders N`) ---

def test_llava_and_sharegpt_corpora_hold_the_same_records(tmp_path):
    from lrc.data.formats import read_annotations

    common = dict(videos=5, seed=4, size=32, min_seconds=3.0, max_seconds=6.0)
    synthesize(tmp_path / "lrc", **common)
    synthesize(tmp_path / "llava", format="llava", **common)
    synthesize(tmp_path / "sharegpt", format="sharegpt", **common)
    meta = json.loads((tmp_path / "lrc" / "meta.json").read_text())
    assert "format" not in meta  # a default corpus's meta.json is as before
    rows = json.loads((tmp_path / "llava" / "train.json").read_text())  # one JSON array
    assert rows[0]["conversations"][0]["value"].startswith("<image>\n") and rows[0]["video"].startswith("videos/")
    assert json.loads((tmp_path / "sharegpt" / "train.jsonl").read_text().splitlines()[0])["messages"][0]["role"] == "user"
    base = read_annotations(tmp_path / "lrc" / "train.jsonl").records
    for name, file in (("llava", "train.json"), ("sharegpt", "train.jsonl")):
        loaded = read_annotations(tmp_path / name / file)
        assert loaded.format == name
        assert [(r.id, r.conversations, r.options, r.answer) for r in loaded.records] == \
               [(r.id, r.conversations, r.options, r.answer) for r in base]
    assert (tmp_path / "llava" / "tokenizer" / "tokenizer.json").read_bytes() == \
           (tmp_path / "lrc" / "tokenizer" / "tokenizer.json").read_bytes()


def test_images_and_frame_folders(tmp_path):
    from PIL import Image
    from transformers import AutoTokenizer

    from lrc.data.formats import read_annotations
    from lrc.data.media import open_video

    out = tmp_path / "mix"
    from lrc.cli import main

    assert main(["data", "synth", str(out), "--videos", "4", "--size", "32", "--images", "5", "--frame-folders", "2",
                 "--format", "llava"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "llava" and len(meta["frame_folders"]) == 2 and meta["images"] == 5
    videos = read_annotations(out / "train.json").records + read_annotations(out / "val.json").records
    folders = [r for r in videos if r.video.is_dir()]
    assert {str(r.video.relative_to(out)) for r in folders} == set(meta["frame_folders"])
    for rec in folders:
        with open_video(rec.video, fps=rec.fps) as video:
            assert video.num_frames == len(list(rec.video.glob("*.png")))
            assert video.duration == pytest.approx(rec.duration)
    images = read_annotations(out / "train_images.json").records + read_annotations(out / "val_images.json").records
    assert sum(meta["image_records"].values()) == len(images)
    single = [r for r in images if len(r.images) == 1]
    pairs = [r for r in images if len(r.images) == 2]
    assert len(single) == 15 and len(pairs) >= 1  # colour, shape, count per image; a pair per two images of a split
    assert all(Image.open(p).size == (32, 32) for r in images for p in r.images)
    assert all("second image" in r.conversations[0]["value"] for r in pairs)
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    for r in images:
        assert tok.unk_token_id not in tok(r.conversations[0]["value"], add_special_tokens=False).input_ids
    assert tok.unk_token_id not in tok("Image1: Image2: ", add_special_tokens=False).input_ids
