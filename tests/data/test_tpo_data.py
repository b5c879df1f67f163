"""TPO task data: the synthetic corpus's temporal / region / mask / preference records match their
pixels, the annotation reader checks the new fields, and task_targets serves the heads."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lrc.data.annotations import AnnotationError, Record, load_annotations
from lrc.data.rle import decode, encode
from lrc.data.synth import synthesize
from lrc.data.synth.corpus import COUNT_QUESTION, COUNT_QUESTION_WITH_EVENT, TASK_TOKENS, _event, _questions
from lrc.data.synth.scenes import PALETTE, SHAPES, AnswerDeck, render_with_labels, video_spec
from lrc.data.tasks import TaskTargetError, saliency, task_targets
from lrc.data.video import VideoFile

ALL = ("mcq", "temporal", "region", "mask", "preference")
TPO = dict(videos=6, seed=0, size=32, min_seconds=1.5, max_seconds=4.0, tasks=ALL)


@pytest.fixture(scope="module")
def tpo_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tpo")
    synthesize(out, **TPO)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for s in ("train", "val") for line in (out / f"{s}.jsonl").read_text().splitlines()]


def _near(frames: np.ndarray, colour: str, tol: int = 60) -> np.ndarray:
    return np.abs(frames.astype(int) - np.array(PALETTE[colour])).max(-1) < tol


def _all_frames(path: Path) -> np.ndarray:
    with VideoFile(path) as v:
        return v.get_frames(list(range(v.num_frames)))


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    return out


def _dilate(m: np.ndarray) -> np.ndarray:
    return ~_erode(~m)


# --- the default corpus is unchanged --------------------------------------------------------------


def test_default_tasks_write_the_same_corpus_as_before(tmp_path):
    small = dict(videos=3, seed=0, size=32, min_seconds=1.5, max_seconds=3.0)
    synthesize(tmp_path / "plain", **small)
    synthesize(tmp_path / "mcq", **small, tasks=("mcq",))
    files = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*") if p.is_file())
    assert len(files) >= 7
    for rel in files:
        assert (tmp_path / "mcq" / rel).read_bytes() == (tmp_path / "plain" / rel).read_bytes(), rel
    meta = json.loads((tmp_path / "plain" / "meta.json").read_text())
    assert "tasks" not in meta  # an MCQ-only corpus's meta.json is the one earlier versions wrote
    vocab = json.loads((tmp_path / "plain" / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert not set(TASK_TOKENS) & set(vocab)


def test_default_corpus_annotations_and_frames_are_pinned(tmp_path):
    # hashes taken with the generator before TPO data existed: annotations (codec-independent) and
    # the rendered frames (before encoding) of the default corpus must not move
    synthesize(tmp_path, videos=5, seed=0, size=32, min_seconds=1.5, max_seconds=30.0)
    synthesize(tmp_path / "t", videos=3, seed=2, size=32, min_seconds=1.0, max_seconds=2.0,
               answer_style="text", multi_turn_train=True)
    h = hashlib.sha256()
    for name in ("train.jsonl", "val.jsonl", "t/train.jsonl", "t/val.jsonl"):
        h.update((tmp_path / name).read_bytes())
    assert h.hexdigest() == "e4ac14dbc9d11f941409bf637ec87b7754a86c8b39d63e5659eea29ce02c90bd"

    h = hashlib.sha256()
    for i in range(8):
        spec = video_spec(np.random.default_rng([0, 100, i]), 32, 1.0, 30.0)
        for frame, _ in render_with_labels(spec, 32):
            h.update(frame.tobytes())
    assert h.hexdigest() == "1632f05de4128d767827465c3ef504f4612d27e3f55b9db896a77bd45631e952"


def test_tpo_tasks_keep_the_base_videos_objects_and_questions(tpo_corpus, tmp_path):
    synthesize(tmp_path, **{**TPO, "tasks": ("mcq",)})
    plain = {r["id"]: r for r in _records(tmp_path)}
    with_tpo = {r["id"]: r for r in _records(tpo_corpus)}
    assert set(plain) <= set(with_tpo)
    for rid, r in plain.items():
        other = with_tpo[rid]
        if r["question_type"] == "count":  # reworded in event videos, same options and answer
            assert other["conversations"][0]["value"].replace(COUNT_QUESTION_WITH_EVENT, COUNT_QUESTION) == \
                r["conversations"][0]["value"]
            other = {**other, "conversations": r["conversations"]}
        assert other == r, rid


# --- the TPO corpus --------------------------------------------------------------------------------


def test_tpo_records_and_meta(tpo_corpus):
    records = _records(tpo_corpus)
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["question_type"], []).append(r)
    videos = {r["video"] for r in records}
    assert len(videos) == 6
    # every video is short here: one of each per video
    for qtype in ("colour", "shape", "direction", "count", "temporal", "region", "region_colour", "mask", "preference"):
        assert len(by_task[qtype]) == 6, qtype
    assert len({r["id"] for r in records}) == len(records)
    meta = json.loads((tpo_corpus / "meta.json").read_text())
    assert meta["tasks"] == list(ALL) and meta["event_videos"] == 6
    assert meta["task_records"] == {"mcq": 30, "temporal": 6, "region": 6, "mask": 6, "preference": 6}
    assert meta["train_records"] + meta["val_records"] == len(records)
    # the reader accepts everything the generator writes
    loaded = load_annotations(tpo_corpus / "train.jsonl") + load_annotations(tpo_corpus / "val.jsonl")
    assert len(loaded) == len(records)
    region = next(r for r in loaded if r.task == "region")
    assert region.frame in (1, 2, 3, 4) and region.track and "masks" not in region.track
    assert "track" not in region.extra and "frame" not in region.extra


def test_tracks_have_one_entry_per_video_frame(tpo_corpus):
    for r in _records(tpo_corpus):
        if "track" not in r:
            continue
        with VideoFile(tpo_corpus / r["video"]) as v:
            n = v.num_frames
        assert len(r["track"]["boxes"]) == n, r["id"]
        if r["task"] == "mask":
            assert len(r["track"]["masks"]) == n
        else:
            assert "masks" not in r["track"]  # region records carry boxes only (small files)


def test_masks_and_boxes_match_the_decoded_pixels(tpo_corpus):
    for r in _records(tpo_corpus):
        if r["task"] != "mask":
            continue
        colour = re.match(r"<video>\nTrack the (\w+) (\w+)\.", r["conversations"][0]["value"]).group(1)
        frames = _all_frames(tpo_corpus / r["video"])
        for f, (rle, box) in enumerate(zip(r["track"]["masks"], r["track"]["boxes"])):
            assert rle is not None and box is not None  # base objects are always in view
            mask = decode(rle)
            assert mask.shape == frames[f].shape[:2]
            near = _near(frames[f], colour)
            core = _erode(mask)
            # inside the mask (away from its edge, which the codec blurs) the pixels have the colour;
            # outside (beyond a 1 px rim) none do
            assert near[core].mean() > 0.9, (r["id"], f)
            assert not (near & ~_dilate(mask)).any(), (r["id"], f)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            h, w = mask.shape
            assert box == pytest.approx([cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h], abs=1e-4)


def test_region_boxes_frame_the_named_object(tpo_corpus):
    for r in _records(tpo_corpus):
        if r["task"] != "region":
            continue
        colour, shape, k = re.match(r"<video>\nWhere is the (\w+) (\w+) in Frame(\d)\?",
                                    r["conversations"][0]["value"]).groups()
        assert int(k) == r["frame"] and r["conversations"][1]["value"] == "<box>"
        assert {"colour": colour, "shape": shape} in [{"colour": o["colour"], "shape": o["shape"]} for o in r["objects"]]
        frames = _all_frames(tpo_corpus / r["video"])
        for f in (0, len(frames) // 2, len(frames) - 1):
            near = _near(frames[f], colour)
            rows, cols = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
            x1, y1, x2, y2 = (v * 32 for v in r["track"]["boxes"][f])
            # the colour's extent in the decoded frame is the box, up to codec blur (a triangle's thin
            # corners fade by up to 2 px at 32 px)
            assert abs(cols[0] - x1) <= 2.01 and abs(cols[-1] + 1 - x2) <= 2.01, (r["id"], f)
            assert abs(rows[0] - y1) <= 2.01 and abs(rows[-1] + 1 - y2) <= 2.01, (r["id"], f)


def test_spans_contain_the_event_and_only_it(tpo_corpus):
    for r in _records(tpo_corpus):
        if r["task"] != "temporal":
            continue
        colour, shape = re.match(r"<video>\nWhen is the (\w+) (\w+) visible\?", r["conversations"][0]["value"]).groups()
        assert r["conversations"][1]["value"] == "<temp>"
        assert colour not in {o["colour"] for o in r["objects"]} and shape in SHAPES
        [(start, end)] = r["spans"]
        assert 0 <= start < end <= r["duration"]
        assert end - start >= 0.25 * r["duration"] - 1e-3
        frames = _all_frames(tpo_corpus / r["video"])
        shown = _near(frames, colour, tol=80).sum((1, 2))
        inside = saliency(r["spans"], np.arange(len(frames)) / r["fps"]).bool().numpy()
        assert inside.sum() >= 1
        assert shown[inside].min() >= 5, (r["id"], shown.tolist())  # the event object, blurred but there
        assert shown[~inside].max(initial=0) <= 1, (r["id"], shown.tolist())


def test_mcq_answers_stay_right_in_event_videos(tpo_corpus):
    records = _records(tpo_corpus)
    events = {r["video"]: r for r in records if r["task"] == "temporal"}
    for r in records:
        if r["video"] not in events or r["task"] != "mcq":
            continue
        event_colour, event_shape = re.match(r"<video>\nWhen is the (\w+) (\w+)",
                                             events[r["video"]]["conversations"][0]["value"]).groups()
        text = r["conversations"][0]["value"]
        if r["question_type"] == "count":
            assert COUNT_QUESTION_WITH_EVENT in text and COUNT_QUESTION not in text
        if r["question_type"] == "colour":  # the named shape is never the event's
            assert re.search(r"What colour is the (\w+)\?", text).group(1) != event_shape
        if r["question_type"] == "shape":
            assert re.search(r"What shape is the (\w+) object\?", text).group(1) != event_colour


def test_region_colour_mcq_input_box_shows_its_answer(tpo_corpus):
    for rec in load_annotations(tpo_corpus / "train.jsonl") + load_annotations(tpo_corpus / "val.jsonl"):
        if rec.question_type != "region_colour":
            continue
        assert rec.task == "mcq" and rec.frame and rec.track and rec.input_boxes is None
        assert rec.conversations[0]["value"].count("<region>") == 1
        options = dict(re.findall(r"^\(([A-Z])\) (\w+)$", rec.conversations[0]["value"], flags=re.M))
        answer_colour = options[rec.answer]
        with VideoFile(rec.video) as v:
            indices = [int((v.num_frames * (i + 0.5)) // 4) for i in range(4)]
            frames = v.get_frames(indices)
        targets = task_targets(rec, indices, [i / 10 for i in indices], 10.0, 32)
        assert set(targets) == {"input_boxes"} and targets["input_boxes"].shape == (1, 4)
        x1, y1, x2, y2 = (targets["input_boxes"][0] * 32).round().long().tolist()
        crop = frames[rec.frame - 1][y1:y2, x1:x2]
        share = {c: _near(crop, c).mean() for c in PALETTE}
        assert max(share, key=share.get) == answer_colour, (rec.id, share)


def test_preference_records(tpo_corpus):
    records = _records(tpo_corpus)
    for r in records:
        if r["task"] != "preference":
            continue
        human, gpt = r["conversations"]
        options = dict(re.findall(r"^\(([A-Z])\) (.+)$", human["value"], flags=re.M))
        assert gpt["value"] in options and r["rejected"] in options and r["rejected"] != gpt["value"]
        # the chosen answer is the MCQ record's answer for the same question
        same = [m for m in records if m["task"] == "mcq" and m["video"] == r["video"]
                and m["conversations"][0]["value"] == human["value"]]
        assert len(same) == 1 and same[0]["answer"] == gpt["value"]


def test_text_answer_style_preference_and_long_videos_skip_tracks(tmp_path):
    # one long video (> 20 s): temporal and preference only; answers written as option text
    synthesize(tmp_path, videos=2, seed=5, size=32, min_seconds=21.0, max_seconds=24.0, val_fraction=0.5,
               answer_style="text", tasks="temporal,region,mask,preference")
    records = _records(tmp_path)
    assert {r["task"] for r in records} == {"temporal", "preference"}
    for r in records:
        if r["task"] == "preference":
            text = r["conversations"][0]["value"]
            options = text.split("\nOptions: ")[1].split(".\n")[0].split(", ")
            assert r["rejected"] in options and r["rejected"] != r["conversations"][1]["value"]
            assert len(r["rejected"]) > 1 or r["rejected"].isdigit()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["tasks"] == ["temporal", "region", "mask", "preference"]
    assert meta["task_records"] == {"temporal": 2, "preference": 2}


def test_event_placement_never_touches_the_base_objects():
    # spec and rendering only (no encoding): many videos, 1-3 objects, short and long
    found = 0
    for i in range(40):
        for size in (32, 64):
            spec = video_spec(np.random.default_rng([7, 100, i]), size, 1.0, 40.0)
            questions = _questions(spec, np.random.default_rng([7, 100, i, 1]), AnswerDeck(np.random.default_rng(0)))
            named = re.search(r"What colour is the (\w+)\?", questions["colour"][0]).group(1)
            event = _event(spec, size, np.random.default_rng([7, 300, i]), avoid_shape=named)
            if event is None:
                continue
            found += 1
            n = spec["num_frames"]
            assert event["shape"] != named and event["colour"] not in {o["colour"] for o in spec["objects"]}
            assert event["last_frame"] - event["first_frame"] >= 0.25 * n
            assert 0 <= event["first_frame"] < event["last_frame"] <= n
            spec["event"] = event
            count = len(spec["objects"])
            for f, (_, labels) in enumerate(render_with_labels(spec, size)):
                on = (labels == count).any()
                assert on == (event["first_frame"] <= f < event["last_frame"]), f
                if on:  # not touching: no base-object pixel next to an event pixel
                    assert not (_dilate(_dilate(labels == count)) & (labels >= 0) & (labels < count)).any()
    assert found >= 75  # nearly every video finds a place


def test_corpus_tokenizer_has_the_task_tokens(tpo_corpus):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tpo_corpus / "tokenizer"))
    vocab_size = len(tok)
    ids = [tok.convert_tokens_to_ids(t) for t in TASK_TOKENS]
    assert ids == list(range(vocab_size - len(TASK_TOKENS), vocab_size))  # appended last
    for token, i in zip(TASK_TOKENS, ids):
        assert tok(f"x{token}y", add_special_tokens=False).input_ids.count(i) == 1
    for r in _records(tpo_corpus):
        for text in [t["value"] for t in r["conversations"]] + ([r["rejected"]] if "rejected" in r else []):
            encoded = tok(text, add_special_tokens=False).input_ids
            assert tok.unk_token_id not in encoded, text
            assert tok.decode(encoded) == text


@pytest.mark.parametrize("tasks, message", [((), "non-empty"), (("mcq", "boxes"), "boxes"), ("mcq,nope", "nope")])
def test_bad_tasks(tmp_path, tasks, message):
    with pytest.raises(ValueError, match=message):
        synthesize(tmp_path, videos=1, tasks=tasks)


def test_cli_tasks_option(tmp_path, capsys):
    from lrc.cli import main

    assert main(["data", "synth", str(tmp_path / "c"), "--videos", "1", "--size", "32",
                 "--tasks", "mcq,preference"]) == 0
    assert {r["task"] for r in _records(tmp_path / "c")} == {"mcq", "preference"}
    assert main(["data", "synth", str(tmp_path / "d"), "--videos", "1", "--tasks", "mcq,grounding"]) == 2
    assert "grounding" in capsys.readouterr().err


# --- annotation validation -------------------------------------------------------------------------


BASE = {"id": "s1", "video": "v.mp4", "duration": 10.0,
        "conversations": [{"from": "human", "value": "<video>\nWhen?"}, {"from": "gpt", "value": "<temp>"}]}
BOX = [0.1, 0.2, 0.5, 0.6]
RLE = encode(np.eye(4, dtype=bool))


@pytest.mark.parametrize("fields, field, what", [
    ({"task": "temporal"}, "spans", "needs spans"),
    ({"task": "temporal", "spans": []}, "spans", "non-empty"),
    ({"task": "temporal", "spans": [[3.0, 2.0]]}, "spans[0]", "start < end"),
    ({"task": "temporal", "spans": [[-1.0, 2.0]]}, "spans[0]", "0 <= start"),
    ({"task": "temporal", "spans": [[1.0, 2.0], [4.0, 12.0]]}, "spans[1]", "after the video's duration"),
    ({"task": "temporal", "spans": [[1.0]]}, "spans[0]", "[start, end]"),
    ({"task": "region", "track": {"boxes": [BOX]}}, "frame", "needs the 1-based frame"),
    ({"task": "region", "frame": 0, "box": BOX}, "frame", "int >= 1"),
    ({"task": "region", "frame": 1}, "track", "track"),
    ({"task": "region", "frame": 1, "box": [0.5, 0.2, 0.1, 0.6]}, "box", "x1 < x2"),
    ({"task": "region", "frame": 1, "track": {"boxes": [BOX, [0, 0, 1.5, 1]]}}, "track.boxes[1]", "normalised"),
    ({"task": "region", "frame": 1, "track": [BOX]}, "track", '"boxes"'),
    ({"task": "mask"}, "track", "needs a track"),
    ({"task": "mask", "track": {"boxes": [BOX]}}, "track.masks", "needs masks"),
    ({"task": "mask", "track": {"boxes": [BOX, BOX], "masks": [RLE]}}, "track.masks", "2"),
    ({"task": "mask", "track": {"boxes": [BOX], "masks": [{"size": [4], "counts": "1"}]}}, "track.masks[0]", "size"),
    ({"task": "mask", "track": {"boxes": [BOX], "masks": [{"size": [4, 4], "counts": "a b"}]}}, "track.masks[0]", "character"),
    ({"task": "mask", "track": {"boxes": [BOX], "masks": [{"size": [4, 4], "counts": [3, 2]}]}}, "track.masks[0]", "add up"),
    ({"task": "mask", "track": {"boxes": [None], "masks": [RLE]}}, "track.masks[0]", "null"),
    ({"task": "mask", "track": {"boxes": [BOX], "masks": [None]}}, "track.masks[0]", "null"),
    ({"task": "preference"}, "rejected", "needs the losing answer"),
    ({"task": "preference", "rejected": ""}, "rejected", "non-empty"),
    ({"task": "chat", "rejected": "B"}, "rejected", "only preference"),
    ({"input_boxes": [BOX]}, "input_boxes", "0 <region>"),
])
def test_bad_tpo_fields_name_file_line_and_field(tmp_path, fields, field, what):
    good = {**BASE, "id": "ok", "task": "temporal", "spans": [[0.0, 1.0]]}
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**BASE, **fields}) + "\n")
    with pytest.raises(AnnotationError) as err:
        load_annotations(path)
    message = str(err.value)
    assert f"{path}:2: {field}: " in message, message
    assert what in message.split(f"{path}:2: {field}: ", 1)[1], message
    assert f"{path}:1" not in message


def test_region_placeholders_need_input_boxes_or_a_track(tmp_path):
    two = [{"from": "human", "value": "<video>\nIs <region> left of <region>?"}, {"from": "gpt", "value": "yes"}]
    one = [{"from": "human", "value": "<video>\nWhat is at <region>?"}, {"from": "gpt", "value": "red"}]
    rows = [
        {**BASE, "id": "a", "conversations": two, "input_boxes": [BOX, BOX]},  # fine
        {**BASE, "id": "b", "conversations": one, "frame": 2, "track": {"boxes": [BOX]}},  # fine
        {**BASE, "id": "c", "conversations": two, "input_boxes": [BOX]},
        {**BASE, "id": "d", "conversations": one},
        {**BASE, "id": "e", "conversations": one, "input_boxes": [[0.2, 0.2, 0.2, 0.3]]},
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AnnotationError) as err:
        load_annotations(path)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert f"{path}:3: input_boxes: has 1 boxes but the human turns have 2 <region>" in message
    assert f"{path}:4: input_boxes: the human turns have 1 <region>" in message
    assert f"{path}:5: input_boxes[0]: needs x1 < x2" in message


def test_valid_tpo_fields_load_into_record(tmp_path):
    rows = [
        {**BASE, "id": "t", "task": "temporal", "spans": [[0, 2.5], [7, 10.0]]},
        {**BASE, "id": "r", "task": "region", "frame": 3, "box": BOX},
        {**BASE, "id": "m", "task": "mask", "track": {"boxes": [None, BOX], "masks": [None, {"size": [4, 4], "counts": [0, 16]}]}},
        {**BASE, "id": "p", "task": "preference", "rejected": "B", "note": 1},
    ]
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t, r, m, p = load_annotations(path)
    assert t.spans == [[0, 2.5], [7, 10.0]] and r.frame == 3 and r.box == BOX
    assert m.track["masks"][0] is None and p.rejected == "B" and p.extra == {"note": 1}


# --- task_targets ------------------------------------------------------------------------------------


def _record(**fields) -> Record:
    return Record(id=fields.pop("id", "x"), video=Path("v.mp4"), source="f.jsonl:7",
                  conversations=fields.pop("conversations", BASE["conversations"]), **fields)


def test_temporal_targets():
    rec = _record(task="temporal", spans=[[1.0, 2.0], [4.0, 12.0]])
    timestamps = [0.5, 1.0, 1.9, 2.0, 4.5, 9.9]
    out = task_targets(rec, [1, 2, 3, 4, 5, 6], timestamps, duration=10.0, frame_size=8)
    assert set(out) == {"spans", "saliency"}
    assert out["spans"].dtype == torch.float32 and out["spans"].tolist() == [[1.0, 2.0], [4.0, 10.0]]  # clipped
    # half-open spans: a frame starting at the span's end is outside
    assert out["saliency"].tolist() == [0, 1, 1, 0, 1, 1]
    # JSON rounding: a span end written as 0.6667 for 10/15 s still excludes the frame at 10/15 s
    assert saliency([[0.2, 0.6667]], [3 / 15, 9 / 15, 10 / 15]).tolist() == [1, 1, 0]
    assert saliency([[0.6667, 1.0]], [10 / 15]).tolist() == [1]


def test_region_targets_read_the_track_at_the_sampled_frame():
    boxes = [[0.1 * i, 0.0, 0.1 * i + 0.05, 0.5] for i in range(8)]
    rec = _record(task="region", frame=2, track={"boxes": boxes})
    out = task_targets(rec, [0, 3, 5, 7], [0, 0.3, 0.5, 0.7], 0.8, 32)
    assert out["frame"] == 1 and out["box"].tolist() == pytest.approx(boxes[3])
    given = _record(task="region", frame=4, box=BOX)
    assert task_targets(given, [0, 3, 5, 7], [0, 0.3, 0.5, 0.7], 0.8, 32)["box"].tolist() == pytest.approx(BOX)


@pytest.mark.parametrize("fields, indices, message", [
    (dict(task="region", frame=5, box=BOX), [0, 1, 2, 3], "Frame5 but only 4 frames were sampled"),
    (dict(task="region", frame=1, track={"boxes": [BOX]}), [3], "only 1 entries"),
    (dict(task="region", frame=1, track={"boxes": [None, BOX]}), [0], "not visible in Frame1"),
    (dict(task="mask", track={"boxes": [BOX]}), [0], "no track.masks"),
])
def test_unservable_records_raise_naming_the_sample(fields, indices, message):
    rec = _record(id="vid-7-region", **fields)
    with pytest.raises(TaskTargetError, match=message) as err:
        task_targets(rec, indices, [0.1 * i for i in indices], 1.0, 32)
    assert "vid-7-region" in str(err.value) and isinstance(err.value, ValueError)


def test_mask_targets_resize_and_mark_visibility():
    big = np.zeros((8, 8), bool)
    big[0:4, 4:8] = True  # top-right quarter
    boxes = [None, [0.5, 0.0, 1.0, 0.5], [0.5, 0.0, 1.0, 0.5]]
    masks = [None, encode(big), encode(big)]
    rec = _record(task="mask", track={"boxes": boxes, "masks": masks})
    out = task_targets(rec, [0, 2, 1], [0.0, 0.2, 0.1], 0.3, (4, 6))
    assert set(out) == {"masks", "boxes", "visible"}
    assert out["masks"].shape == (3, 4, 6) and out["masks"].dtype == torch.bool
    assert out["visible"].tolist() == [False, True, True]
    assert out["boxes"][0].tolist() == [0, 0, 0, 0] and out["boxes"][1].tolist() == [0.5, 0.0, 1.0, 0.5]
    assert not out["masks"][0].any()
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[0:2, 3:6] = True  # nearest resize keeps the top-right quarter
    assert torch.equal(out["masks"][1], expected) and torch.equal(out["masks"][2], expected)


def test_input_boxes_for_region_placeholders():
    conv = [{"from": "human", "value": "<video>\nIs <region> left of <region>?"}, {"from": "gpt", "value": "yes"}]
    rec = _record(task="chat", conversations=conv, input_boxes=[BOX, [0, 0, 1, 1]])
    out = task_targets(rec, [0, 1], [0, 1], 2.0, 32)
    assert out["input_boxes"].shape == (2, 4) and out["input_boxes"][1].tolist() == [0, 0, 1, 1]
    assert task_targets(_record(task="mcq"), [0], [0.0], 1.0, 32) == {}
    assert task_targets(_record(task="preference", rejected="B"), [0], [0.0], 1.0, 32) == {}


# --- the dataset --------------------------------------------------------------------------------------


def test_dataset_items_and_batches_carry_the_targets(tpo_corpus):
    from transformers import AutoTokenizer

    from lrc.data.collate import collate
    from lrc.data.dataset import VideoConversationDataset
    from lrc.data.prompt import PromptBuilder, prepare_tokenizer
    from lrc_plugins.samplers.uniform import UniformSampler

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tpo_corpus / "tokenizer")))
    records = load_annotations(tpo_corpus / "train.jsonl")
    try:
        prompts = PromptBuilder(tok, tokens_per_frame=2, task_tokens={"<temp>": "<temp_begin>", "<box>": "<box_begin>",
                                                                       "<track>": "<track_begin>"})
    except TypeError:  # a PromptBuilder without TPO task tokens
        prompts = PromptBuilder(tok, tokens_per_frame=2)
    ds = VideoConversationDataset(records, UniformSampler(num_frames=4), prompts, image_size=16,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    items = {rec.question_type: ds[i] for i, rec in enumerate(records)}
    for qtype, item in items.items():
        assert "skipped" not in item, (qtype, item)
        assert item["task"] == records[[r.question_type for r in records].index(qtype)].task
        assert item["duration"] > 0
    assert items["colour"]["targets"] == {} and "input_boxes" not in items["colour"]
    temporal = items["temporal"]["targets"]
    assert temporal["spans"].shape == (1, 2) and temporal["saliency"].shape == (4,)
    assert items["region"]["targets"]["box"].shape == (4,) and 0 <= items["region"]["targets"]["frame"] < 4
    mask = items["mask"]["targets"]
    assert mask["masks"].shape == (4, 16, 16) and mask["visible"].all() and mask["masks"].any()
    assert items["region_colour"]["targets"] == {} and items["region_colour"]["input_boxes"].shape == (1, 4)

    batch = collate([items["temporal"], items["region_colour"], items["mask"], {"skipped": "x"}], pad_id=0)
    assert batch["task"] == ["temporal", "mcq", "mask"]
    assert batch["targets"][0] is items["temporal"]["targets"] and batch["targets"][1] == {}
    assert batch["input_boxes"][0] is None and batch["input_boxes"][1].shape == (1, 4)
    assert batch["durations"].shape == (3,) and batch["durations"].dtype == torch.float32


def test_dataset_skips_a_record_it_cannot_serve(tpo_corpus):
    from transformers import AutoTokenizer

    from lrc.data.dataset import VideoConversationDataset
    from lrc.data.prompt import PromptBuilder, prepare_tokenizer
    from lrc_plugins.samplers.uniform import UniformSampler

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tpo_corpus / "tokenizer")))
    rec = next(r for r in load_annotations(tpo_corpus / "train.jsonl") if r.question_type == "region_colour")
    rec.frame = 4
    ds = VideoConversationDataset([rec], UniformSampler(num_frames=2), PromptBuilder(tok, tokens_per_frame=2),
                                  image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    item = ds[0]
    assert item["skipped"].id == rec.id and "Frame4 but only 2 frames were sampled" in item["skipped"].reason
