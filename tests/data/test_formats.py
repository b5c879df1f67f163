"""Annotation formats: LLaVA and ShareGPT files in the shapes their tools document, read into lrc's Records,
detected from their first records, refused with file:line and field, converted without touching media.

The fixtures are written here in the documented field structure of each source (not copied files):
LLaVA-Video-178K (a JSON array, `video` with `<image>` as its placeholder, `data_source`), LLaVA-OneVision
single- and multi-image records (`image` as a path or a list), ms-swift's messages format (`messages` of
{role, content}, `videos`/`images` lists, a system message, `rejected_response`) and LLaMA-Factory's
multimodal sharegpt (`messages` with `images` and no placeholder; `conversations` of {from, value} with
`images`).
"""

import json
import logging
from pathlib import Path

import pytest

from lrc.cli import main
from lrc.data.annotations import AnnotationError
from lrc.data.formats import convert, detect_format, read_annotations, write_annotations

LLAVA_VIDEO_178K = [  # 0_30_s_academic_v0_1 style: one video per record, <image> stands for the video
    {"id": "v_bxxvn1tTYQk", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the man doing at the start of the video?"},
        {"from": "gpt", "value": "He ties his shoes."},
        {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "He runs."}],
     "data_source": "0_30_s_academic_v0_1", "video": "academic/v_bxxvn1tTYQk.mp4"},
    {"id": "v_bxxvn1tTYQk", "conversations": [  # the same video again, another question (ids repeat)
        {"from": "human", "value": "<image>\nHow many people appear?\nA. 1\nB. 2\nAnswer with the option's letter."},
        {"from": "gpt", "value": "A"}],
     "data_source": "0_30_s_academic_v0_1", "video": "academic/v_bxxvn1tTYQk.mp4"},
]
LLAVA_ONEVISION = [
    {"id": "coco-000000391895", "image": "coco/train2017/000000391895.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the man riding?"}, {"from": "gpt", "value": "A motorbike."}]},
    {"id": "multi-7", "image": ["m/a.jpg", "m/b.jpg"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nWhat changed between the two pictures?"},
        {"from": "gpt", "value": "The light is on."}]},
    {"image": "ocr/42.png", "conversations": [  # no id, no placeholder
        {"from": "human", "value": "Read the sign."}, {"from": "gpt", "value": "STOP"}]},
]
MS_SWIFT = [
    {"messages": [{"role": "system", "content": "You are a helpful and harmless assistant."},
                  {"role": "user", "content": "<video>What happens in the video?"},
                  {"role": "assistant", "content": "A dog catches a ball."}], "videos": ["clips/dog.mp4"]},
    {"messages": [{"role": "user", "content": "<image><image>What is the difference between the two images?"},
                  {"role": "assistant", "content": "The first one is a kitten, and the second one is a puppy."}],
     "images": ["/abs/kitten.jpg", "pets/puppy.png"]},
    {"messages": [{"role": "user", "content": "<image>Is it a cat?"}, {"role": "assistant", "content": "Yes."}],
     "images": ["pets/cat.jpg"], "rejected_response": "No."},
]
LLAMA_FACTORY_MLLM_DEMO = [  # data/mllm_demo.json's shape: messages, content before role, no placeholder
    {"messages": [{"content": "Who are they?", "role": "user"},
                  {"content": "Two football players.", "role": "assistant"},
                  {"content": "What are they doing?", "role": "user"},
                  {"content": "Celebrating.", "role": "assistant"}], "images": ["mllm_demo_data/1.jpg"]},
    {"messages": [{"content": "<video>Why is he on the ground?", "role": "user"},
                  {"content": "He slid on his knees.", "role": "assistant"}], "videos": ["mllm_demo_data/1.mp4"]},
]
LLAMA_FACTORY_SHAREGPT = [  # formatting: sharegpt, default tags: conversations of {from, value}
    {"conversations": [{"from": "human", "value": "<image>What is in the box?"}, {"from": "gpt", "value": "A hat."}],
     "images": ["box.jpg"], "system": "Answer briefly."},
]


def _json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows, indent=2))  # pretty-printed: items span several lines
    return path


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_llava_video_178k_array_reads_as_video_records(tmp_path, caplog):
    path = _json(tmp_path / "0_30_s_academic_oe_v0_1_qa_processed.json", LLAVA_VIDEO_178K)
    with caplog.at_level(logging.INFO, logger="lrc.data.formats"):
        loaded = read_annotations(path, root=tmp_path / "videos")
    assert loaded.format == "llava" and "JSON array" in loaded.reason
    assert f"{path}: read as llava" in caplog.text
    first, second = loaded.records
    assert first.video == tmp_path / "videos" / "academic" / "v_bxxvn1tTYQk.mp4" and first.images is None
    assert first.conversations[0]["value"] == "<video>\nWhat is the man doing at the start of the video?"
    assert first.conversations[2] == {"from": "human", "value": "And then?"}
    assert first.extra == {"data_source": "0_30_s_academic_v0_1"}
    assert (first.id, second.id) == ("v_bxxvn1tTYQk", "v_bxxvn1tTYQk#2")  # repeated ids made unique
    assert first.source == f"{path}:2 [item 0]" and second.source.endswith("[item 1]")


def test_llava_onevision_images_one_or_several(tmp_path):
    loaded = read_annotations(_json(tmp_path / "ov.json", LLAVA_ONEVISION))
    single, multi, bare = loaded.records
    assert single.video is None and single.images == [tmp_path / "coco/train2017/000000391895.jpg"]
    assert multi.images == [tmp_path / "m/a.jpg", tmp_path / "m/b.jpg"]
    assert bare.id == "ov-2" and bare.conversations[0]["value"] == "<image>\nRead the sign."
    assert single.media_label == str(tmp_path / "coco/train2017/000000391895.jpg")


def test_llava_json_lines_read_too(tmp_path):
    loaded = read_annotations(_jsonl(tmp_path / "v.jsonl", LLAVA_VIDEO_178K))
    # a JSONL file of LLaVA records whose video placeholder is <image> does not fit lrc's schema
    assert loaded.format == "llava" and "not lrc" in loaded.reason and "no <video> placeholder" in loaded.reason
    assert loaded.records[0].conversations[0]["value"].startswith("<video>\n")


def test_ms_swift_messages(tmp_path):
    loaded = read_annotations(_jsonl(tmp_path / "swift.jsonl", MS_SWIFT))
    assert loaded.format == "sharegpt"
    video, pair, pref = loaded.records
    assert video.video == tmp_path / "clips/dog.mp4" and video.extra["system"].startswith("You are")
    assert [t["from"] for t in video.conversations] == ["human", "gpt"]
    assert pair.images == [Path("/abs/kitten.jpg"), tmp_path / "pets/puppy.png"]  # absolute paths stay
    assert pref.task == "preference" and pref.rejected == "No."
    assert [r.id for r in loaded.records] == ["swift-0", "swift-1", "swift-2"]


def test_llama_factory_demo_shapes(tmp_path):
    demo = read_annotations(_json(tmp_path / "mllm_demo.json", LLAMA_FACTORY_MLLM_DEMO))
    assert demo.format == "sharegpt"
    image, video = demo.records
    assert image.conversations[0]["value"] == "<image>\nWho are they?" and len(image.conversations) == 4
    assert video.video == tmp_path / "mllm_demo_data/1.mp4"
    default = read_annotations(_json(tmp_path / "lf.json", LLAMA_FACTORY_SHAREGPT))
    assert default.format == "sharegpt" and default.records[0].extra == {"system": "Answer briefly."}


def test_lrc_jsonl_is_detected_as_lrc(corpus):
    loaded = read_annotations(corpus / "val.jsonl")
    assert loaded.format == "lrc" and loaded.reason.startswith("JSON lines; all of the first")
    assert detect_format(corpus / "train.jsonl")[0] == "lrc"


# -- bad records: file, line / item, field --------------------------------------------------------

def test_a_bad_llava_record_names_file_line_item_and_field(tmp_path):
    rows = [LLAVA_VIDEO_178K[0], {**LLAVA_VIDEO_178K[1], "conversations": [{"from": "human", "value": "<image>\nQ"}]},
            {"id": "x", "video": "a.mp4", "image": "b.jpg", "conversations": LLAVA_VIDEO_178K[0]["conversations"]},
            {"id": "y", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
            {"id": "z", "video": "c.mp4", "conversations": [{"from": "human", "value": "<image><video>Q"},
                                                             {"from": "gpt", "value": "A"}]}]
    path = _json(tmp_path / "bad.json", rows)
    with pytest.raises(AnnotationError) as err:
        read_annotations(path, format="llava")
    text = str(err.value)
    assert "4 problem(s)" in text
    starts = [i for i, line in enumerate(path.read_text().splitlines(), 1) if line == "  {"]
    assert f"{path}:{starts[1]} [item 1]: conversations: has no gpt turn" in text
    assert "[item 2]: image: a record holds one video or images" in text
    assert "[item 3]: video: a record needs a `video` or an `image`" in text
    assert "[item 4]: conversations: the human turns have 2 <image>/<video> placeholders for one video" in text


def test_json_array_items_carry_their_line(tmp_path):
    path = _json(tmp_path / "a.json", LLAVA_ONEVISION)
    lines = path.read_text().splitlines()
    starts = [i for i, l in enumerate(lines, 1) if l == "  {"]
    assert [r.source for r in read_annotations(path).records] == [f"{path}:{n} [item {k}]" for k, n in enumerate(starts)]


def test_a_bad_sharegpt_record_names_line_and_field(tmp_path):
    rows = [MS_SWIFT[0],
            {"messages": [{"role": "user", "content": "<video>Q"}, {"role": "tool", "content": "x"},
                          {"role": "assistant", "content": "A"}], "videos": ["v.mp4"]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "Q"}]},
                          {"role": "assistant", "content": "A"}], "images": ["i.jpg"]},
            {"messages": [{"role": "user", "content": "<video>Q"}, {"role": "assistant", "content": "A"}],
             "videos": ["a.mp4", "b.mp4"]},
            {"messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}],
             "images": ["a.jpg", "b.jpg"]},
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
             "videos": ["https://example.com/v.mp4"]}]
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(AnnotationError) as err:
        read_annotations(path)  # detected from the keys, problems in that format
    text = str(err.value)
    assert "(read as sharegpt" in text
    assert f"{path}:2: messages[1]: role 'tool' is not supported" in text
    assert f"{path}:3: messages[0]: content must be a string" in text
    assert f"{path}:4: videos: a record holds exactly one video" in text
    assert f"{path}:5: conversations: the human turns have 1 <image> placeholder(s) for 2 image(s)" in text
    assert f"{path}:6: video: 'https://example.com/v.mp4' is a URL" in text


def test_lrc_format_image_records_and_their_checks(tmp_path):
    good = [{"id": "i", "image": "a.png", "task": "mcq", "options": ["A", "B"], "answer": "A",
             "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]},
            {"id": "j", "images": ["a.png", "b.png"],
             "conversations": [{"from": "human", "value": "<image>\n<image>\nQ?"}, {"from": "gpt", "value": "A"}]},
            {"id": "k", "video": "v.mp4", "start": 1.5, "end": 4.0,
             "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}]
    loaded = read_annotations(_jsonl(tmp_path / "ok.jsonl", good))
    assert loaded.format == "lrc"
    assert loaded.records[1].images == [tmp_path / "a.png", tmp_path / "b.png"]
    assert (loaded.records[2].start, loaded.records[2].end) == (1.5, 4.0)
    bad = [{"id": "a", "image": "a.png", "task": "temporal", "spans": [[0, 1]],
            "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]},
           {"id": "b", "images": ["a.png", "b.png"],
            "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]},
           {"id": "c", "image": "a.png",
            "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]},
           {"id": "d", "video": "v.mp4", "start": 3, "end": 2,
            "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]},
           {"id": "e", "video": "v.mp4", "image": "a.png",
            "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}]
    path = _jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(AnnotationError) as err:
        read_annotations(path, format="lrc")
    text = str(err.value)
    assert f"{path}:1: task: a temporal record needs a video" in text
    assert f"{path}:2: conversations: the human turns have 1 <image> placeholder(s) for 2 image(s)" in text
    assert f"{path}:3: conversations[0]: an image record has no video" in text
    assert f"{path}:4: end: must be after start (3 s), got 2" in text
    assert f"{path}:5: video: a record holds one video or images, not both" in text


def test_lrc_format_refuses_a_json_array(tmp_path):
    with pytest.raises(AnnotationError, match="lrc format is JSON lines"):
        read_annotations(_json(tmp_path / "a.json", LLAVA_ONEVISION), format="lrc")


def test_broken_json_array_is_one_error_with_its_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"id": "a", "image": "x.png"},\n  {"id": "b" "image": "y.png"}\n]\n')
    with pytest.raises(AnnotationError, match=rf"{path}:3: \(file\): not valid JSON"):
        read_annotations(path)
    path.write_text('[\n  {"id": "a", "image": "x.png", "conversations": []},\n')
    with pytest.raises(AnnotationError, match="not closed"):
        read_annotations(path)
    path.write_text('[{"id": NaN}]')
    with pytest.raises(AnnotationError, match="NaN is not valid JSON"):
        read_annotations(path)


# -- conversion -----------------------------------------------------------------------------------

def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.video, x.images, x.conversations, x.task, x.options, x.answer, x.rejected, x.start, x.end) == \
               (y.video, y.images, y.conversations, y.task, y.options, y.answer, y.rejected, y.start, y.end)
        assert {k: v for k, v in x.extra.items()} == {k: v for k, v in y.extra.items()}


@pytest.mark.parametrize("via", ["llava", "sharegpt", "lrc"])
def test_convert_round_trips_every_format(tmp_path, via, corpus):
    src = _jsonl(tmp_path / "mixed.jsonl", [json.loads(l) for l in (corpus / "val.jsonl").read_text().splitlines()] + [
        {"id": "img", "images": ["i/a.png", "i/b.png"], "task": "preference", "rejected": "no",
         "conversations": [{"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "yes"}]},
        {"id": "seg", "video": "v.mp4", "start": 1.0, "end": 2.5, "system": "Be brief.",
         "conversations": [{"from": "human", "value": "<video>\nQ"}, {"from": "gpt", "value": "A"}]}])
    original = read_annotations(src).records
    middle = tmp_path / "out" / ("mid.json" if via == "llava" else "mid.jsonl")
    done = convert(src, middle, to=via)
    assert done == {"records": len(original), "from": "lrc", "from_reason": done["from_reason"], "to": via,
                    "out": str(middle)}
    assert read_annotations(middle).format == via
    back = tmp_path / "back.jsonl"
    convert(middle, back, to="lrc")
    _same(read_annotations(back).records, original)
    # paths outside the new file's folder are written absolute, inside it relative
    text = middle.read_text()
    assert str(tmp_path / "videos") in text and str(tmp_path / "i" / "a.png") in text


def test_converted_llava_uses_image_placeholders_and_relative_paths(tmp_path):
    src = _jsonl(tmp_path / "s.jsonl", MS_SWIFT[:2])
    convert(src, tmp_path / "l.json", to="llava")
    rows = json.loads((tmp_path / "l.json").read_text())
    assert rows[0]["video"] == "clips/dog.mp4" and rows[0]["conversations"][0]["value"] == "<image>What happens in the video?"
    assert rows[1]["image"] == ["/abs/kitten.jpg", "pets/puppy.png"]
    assert rows[0]["system"].startswith("You are")


def test_convert_refuses_to_overwrite_and_the_cli_exits_2(tmp_path, capsys):
    src = _json(tmp_path / "a.json", LLAVA_ONEVISION)
    out = tmp_path / "a.jsonl"
    assert main(["data", "convert", str(src), str(out), "--to", "sharegpt"]) == 0
    assert "3 records" in capsys.readouterr().out
    assert main(["data", "convert", str(src), str(out), "--to", "sharegpt"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["data", "convert", str(src), str(out), "--to", "lrc", "--force"]) == 0
    assert read_annotations(out).format == "lrc"
    assert main(["data", "convert", str(src), str(tmp_path / "x.json"), "--to", "lrc"]) == 2
    assert "written as JSON lines" in capsys.readouterr().err


def test_write_annotations_is_atomic(tmp_path, corpus):
    records = read_annotations(corpus / "val.jsonl").records
    out = write_annotations(records, tmp_path / "v.json", "llava")
    assert not list(tmp_path.glob("*.tmp")) and len(json.loads(out.read_text())) == len(records)


# -- whatever a file holds: records or an AnnotationError, never a crash -----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8),
                  st.sampled_from(["<image>", "<video>", "<image>\n<image>", "a.mp4", "x.jpg", "user", "assistant",
                                   "human", "gpt", "system", "tool", "http://x/y.mp4"]))
_values = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                       max_leaves=8)
_turn = st.fixed_dictionaries({}, optional={"from": _values, "value": _values, "role": _values, "content": _values})
_record = st.fixed_dictionaries({}, optional={
    "id": _values, "video": _values, "image": _values, "images": _values, "videos": _values,
    "conversations": st.one_of(_values, st.lists(_turn, max_size=3)),
    "messages": st.one_of(_values, st.lists(_turn, max_size=3)), "rejected_response": _values,
    "chosen": _values, "rejected": _values, "system": _values, "start": _values, "end": _values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_record, min_size=1, max_size=4), st.sampled_from(["auto", "llava", "sharegpt"]), st.booleans())
def test_any_llava_or_sharegpt_shaped_file_reads_or_raises_annotation_error(rows, format, array):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("f.json" if array else "f.jsonl")
        path.write_text(json.dumps(rows) if array else "".join(json.dumps(r) + "\n" for r in rows))
        try:
            loaded = read_annotations(path, format=format)
        except AnnotationError as exc:
            assert str(path) in str(exc)
            return
        for rec in loaded.records:
            assert isinstance(rec.id, str) and rec.media and all(p.is_absolute() for p in rec.media)
            assert all(t["from"] in ("human", "gpt") and isinstance(t["value"], str) for t in rec.conversations)
