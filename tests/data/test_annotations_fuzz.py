"""Fuzzing the annotation reader: whatever a JSONL file holds, ``load_annotations`` either returns
well-typed records or raises AnnotationError naming the file and line — never another exception.

Three generators: arbitrary text/bytes lines (broken JSON, NaN/Infinity literals, huge numbers, deep
nesting, invalid UTF-8), arbitrary JSON values, and near-valid records with every field (the TPO ones
included) swapped for a value of the wrong type or range. Example counts stay modest so the file runs
in seconds; a crash found here is pinned by a plain regression test below.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrc.data.annotations import AnnotationError, Record, load_annotations

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BOX = [0.1, 0.2, 0.5, 0.6]
RLE = {"size": [4, 4], "counts": [0, 16]}
BASE = {"id": "r", "video": "v.mp4",
        "conversations": [{"from": "human", "value": "<video>\nWhat?"}, {"from": "gpt", "value": "A"}]}
FIELDS = ("id", "video", "conversations", "task", "question_type", "options", "answer", "duration", "fps",
          "spans", "frame", "box", "track", "input_boxes", "rejected")
TASKS = ("chat", "mcq", "temporal", "region", "mask", "preference")

# -- strategies ---------------------------------------------------------------------------------------
numbers = st.one_of(
    st.integers(), st.integers(min_value=-(10 ** 300), max_value=10 ** 300),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, -1, 1, 1e308, -0.0, 2 ** 63, 0.5]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20),
                    st.sampled_from(["", "<video>", "<region>", "<image>", "human", "gpt", "\x00", "\u202e"]))
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                     st.dictionaries(st.one_of(st.sampled_from(FIELDS + ("from", "value", "boxes", "masks", "size", "counts")),
                                                               st.text(max_size=8)), inner, max_size=5)),
    max_leaves=20)
turns = st.lists(st.one_of(
    st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", ""]),
                           "value": st.one_of(st.text(max_size=30), st.sampled_from(["<video>", "<video><video>", "<region>", "<video> <region>"]))}),
    json_values), max_size=4)
near_valid = {
    "id": st.one_of(st.text(max_size=10), st.integers(), json_values),
    "video": st.one_of(st.sampled_from(["v.mp4", "/abs/v.mp4", "", "a\x00b.mp4"]), json_values),
    "conversations": st.one_of(turns, json_values),
    "task": st.one_of(st.sampled_from(TASKS), json_values),
    "question_type": json_values,
    "options": st.one_of(st.just(["A", "B"]), st.lists(json_values, max_size=3), json_values),
    "answer": st.one_of(st.sampled_from(["A", "B", ""]), json_values),
    "duration": st.one_of(numbers, json_values),
    "fps": st.one_of(numbers, json_values),
    "spans": st.one_of(st.lists(st.lists(numbers, max_size=3), max_size=3), json_values),
    "frame": st.one_of(numbers, json_values),
    "box": st.one_of(st.just(BOX), st.lists(numbers, max_size=5), json_values),
    "track": st.one_of(
        st.fixed_dictionaries({"boxes": st.lists(st.one_of(st.none(), st.just(BOX), json_values), max_size=3)},
                              optional={"masks": st.one_of(st.lists(st.one_of(st.none(), st.just(RLE), json_values,
                                                                              st.fixed_dictionaries({"size": json_values, "counts": st.one_of(st.text(max_size=10), st.lists(numbers, max_size=4), json_values)})),
                                                                    max_size=3), json_values)}),
        json_values),
    "input_boxes": st.one_of(st.lists(st.one_of(st.just(BOX), json_values), max_size=3), json_values),
    "rejected": st.one_of(st.text(max_size=10), json_values),
}
records = st.builds(lambda base, extra: {**base, **extra},
                    st.fixed_dictionaries({}, optional=near_valid),
                    st.dictionaries(st.text(max_size=8), json_values, max_size=2))
raw_lines = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", " ", "\t", "NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "[" * 5000,
                     "{" * 3000, '{"id": NaN}', '{"id": 1e400, "video": Infinity}', "\ufeff{}", "null", "[]",
                     '{"id": "a", "id": "b"}', '"\\ud800"', "{}" * 3]),
    records.map(lambda r: json.dumps(r, allow_nan=True)),
    json_values.map(lambda v: json.dumps(v, allow_nan=True)),
)


# -- the property ---------------------------------------------------------------------------------
def _load(lines: list, tmp: Path):
    """Write ``lines`` (str, or bytes as-is) and load them; return records or the AnnotationError."""
    path = tmp / "fuzz.jsonl"
    data = b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8", "surrogatepass")) + b"\n" for ln in lines)
    path.write_bytes(data)
    try:
        return path, load_annotations(path)
    except AnnotationError as exc:
        return path, exc


def _check(path: Path, result) -> None:
    if isinstance(result, AnnotationError):
        message = str(result)
        assert str(path) in message, message
        assert re.search(re.escape(str(path)) + r":\d+: ", message) or "has no records" in message, message
        assert len(message) < 50_000, "messages must stay readable: long values are shortened"
        return
    for rec in result:  # what the loader accepted is what the rest of lrc relies on
        assert isinstance(rec, Record) and isinstance(rec.id, str) and rec.video.is_absolute()
        assert isinstance(rec.task, str)
        assert all(isinstance(t, dict) and isinstance(t["value"], str) for t in rec.conversations)
        assert rec.question_type is None or isinstance(rec.question_type, str)
        assert rec.answer is None or isinstance(rec.answer, str)
        assert rec.duration is None or (isinstance(rec.duration, (int, float)) and math.isfinite(rec.duration)
                                        and rec.duration > 0)
        assert rec.source.startswith(f"{path}:")


@SETTINGS
@given(st.lists(st.one_of(raw_lines, st.binary(max_size=30)), max_size=6))
def test_arbitrary_lines_load_or_raise_annotation_error(lines):
    with tempfile.TemporaryDirectory() as tmp:
        _check(*_load(lines, Path(tmp)))


@SETTINGS
@given(st.lists(records, min_size=1, max_size=4))
def test_near_valid_records_load_or_raise_annotation_error(rows):
    with tempfile.TemporaryDirectory() as tmp:
        _check(*_load([json.dumps({**BASE, **r}, allow_nan=True) for r in rows], Path(tmp)))


@SETTINGS
@given(st.sampled_from(FIELDS), json_values, st.sampled_from(TASKS))
def test_one_wrong_field_in_a_valid_record(name, value, task):
    good = {**BASE, "task": task, "options": ["A", "B"], "answer": "A", "spans": [[0, 1]], "frame": 1,
            "box": BOX, "track": {"boxes": [BOX], "masks": [RLE]}}
    if task == "preference":
        good["rejected"] = "B"
    with tempfile.TemporaryDirectory() as tmp:
        _check(*_load([json.dumps({**good, name: value}, allow_nan=True)], Path(tmp)))


# -- regressions found by the fuzzer ------------------------------------------------------------------
@pytest.mark.parametrize("line, field", [
    ("9" * 5000, "(line)"),  # int() digit limit: ValueError, not JSONDecodeError
    ("[" * 5000, "(line)"),  # RecursionError in the JSON parser
    ('{"id": NaN}', "(line)"),  # NaN/Infinity are not JSON, though Python's json reads them
    ('{"duration": 1e999}', "(line)"),  # parses to inf
    ('{"id": "a", "id": "b"}', "(line)"),  # json keeps the last silently
])
def test_unparseable_lines_are_annotation_errors(tmp_path, line, field):
    path, result = _load([line], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:1: {field}: " in str(result)


def test_invalid_utf8_names_the_line(tmp_path):
    path, result = _load([json.dumps(BASE), b"\xff\xfe{}"], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:2: (line): not valid UTF-8" in str(result)


@pytest.mark.parametrize("fields, field", [
    ({"duration": float("nan")}, "(line)"),
    ({"duration": float("inf")}, "(line)"),
    ({"duration": 0}, "duration"),
    ({"task": "temproal"}, "task"),
    ({"id": True}, "id"),
    ({"duration": True}, "duration"),
    ({"fps": -1}, "fps"),
    ({"task": ["mcq"]}, "task"),
    ({"question_type": {"a": 1}}, "question_type"),
    ({"answer": 3}, "answer"),
    ({"id": 2 ** 80 + 0.5}, "id"),
    ({"task": "mcq", "options": ["A", "B"], "answer": ["A"]}, "answer"),
])
def test_wrong_types_of_plain_fields(tmp_path, fields, field):
    path, result = _load([json.dumps({**BASE, **fields}, allow_nan=True)], tmp_path)
    assert isinstance(result, AnnotationError), result
    assert f"{path}:1: {field}: " in str(result)


def test_long_values_are_shortened_in_messages(tmp_path):
    path, result = _load([json.dumps({**BASE, "box": list(range(100_000))})], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:1: box: " in str(result) and len(str(result)) < 2000


# -- placeholders against media -------------------------------------------------------------------
def test_video_placeholder_without_a_video_path(tmp_path):
    row = {k: v for k, v in BASE.items() if k != "video"}
    path, result = _load([json.dumps(row)], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:1: video: " in str(result) and "<video>" in str(result)


def test_video_path_without_a_placeholder(tmp_path):
    row = {**BASE, "conversations": [{"from": "human", "value": "What?"}, {"from": "gpt", "value": "A"}]}
    path, result = _load([json.dumps(row)], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:1: conversations: " in str(result) and "no <video> placeholder" in str(result)


def test_video_placeholder_in_a_gpt_turn_is_refused(tmp_path):
    row = {**BASE, "conversations": [{"from": "human", "value": "<video>\nWhat?"},
                                     {"from": "gpt", "value": "A <video>"}]}
    path, result = _load([json.dumps(row)], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:1: conversations[1]: " in str(result) and "human" in str(result)


def test_image_placeholder_is_refused(tmp_path):
    row = {**BASE, "conversations": [{"from": "human", "value": "<video><image>\nWhat?"},
                                     {"from": "gpt", "value": "A"}]}
    path, result = _load([json.dumps(row)], tmp_path)
    assert isinstance(result, AnnotationError)
    assert f"{path}:1: conversations: " in str(result) and "<image>" in str(result)
