"""Each benchmark reads its own published layout into items (checked field by field against the fixture), asks its
reference prompt, and scores a hand-checked set of answers per category."""

from pathlib import Path

import numpy as np
import pytest

from lrc.evaluation import BenchmarkDataError, get
from lrc.evaluation.runner import sample_video, select
from lrc.evaluation.scoring import flat_metrics, iou, score_grounding, score_mcq, summarize
from lrc.registry import SAMPLERS


def lines_for(bench, items, answers, head=None):
    """The prediction lines the runner writes, for the given answer texts (and head spans)."""
    lines = []
    for k, (item, text) in enumerate(zip(items, answers)):
        line = item.describe() | {"prediction": text}
        if bench.kind == "mcq":
            line.update(score_mcq(item, text))
        else:
            line.update(score_grounding(item, text, (head or {}).get(k, ())))
        lines.append(line)
    return lines


def by_id(items):
    return {item.id: item for item in items}


def test_mvbench_reads_both_layouts_segments_and_frame_folders(benches):
    data = benches["mvbench"]
    bench = get("mvbench")
    items = by_id(bench.read(data))
    assert sorted(items) == ["action_localization/0", "action_sequence/0", "episodic_reasoning/0", "moving_count/0",
                             "moving_count/1"]
    seq = items["action_sequence/0"]  # InternVL's layout: a full-length video, its segment applies
    assert seq.video == data / "video/star/Charades_v1_480/clip_a.mp4" and (seq.start, seq.end) == (1.0, 3.0)
    assert seq.options == ["Put down the cup.", "Opened the door."] and seq.answer == "B"
    tvqa = items["episodic_reasoning/0"]  # frames at 3 fps
    assert tvqa.video == data / "video/tvqa/frames_fps3_hq/s01e02_seg" and tvqa.fps == 3.0 and tvqa.answer == "C"
    count = items["moving_count/1"]  # lmms-eval's layout: no video/ level
    assert count.video == data / "clevrer/video_validation/video_10000.mp4" and count.answer == "C"
    cut = items["action_localization/0"]  # a pre-cut segment: its start/end are not applied again
    assert cut.video == data / "sta/sta_video_segment/seg_b.mp4" and cut.start is None and cut.end is None
    assert bench.prompt(seq).endswith("Question: What happened after the person took the cup?\nOptions:\n"
                                      "(A) Put down the cup.\n(B) Opened the door.\nOnly give the best option.")
    assert bench.prompt(seq).startswith("Carefully watch the video")


def test_a_segment_is_sampled_as_a_video_of_its_own(benches):
    item = by_id(get("mvbench").read(benches["mvbench"]))["action_sequence/0"]  # 6 s at 4 fps, segment 1-3 s
    video = sample_video(item, SAMPLERS.get("uniform")(num_frames=4), 32, 30.0)
    # frames 4..11 of the video (1.0 s to 3.0 s), at the midpoints of four equal parts
    assert video.indices.tolist() == [5, 7, 9, 11] and video.duration == pytest.approx(2.0)
    assert np.allclose(video.timestamps, [0.25, 0.75, 1.25, 1.75]) and video.frames.shape == (4, 32, 32, 3)
    tvqa = by_id(get("mvbench").read(benches["mvbench"]))["episodic_reasoning/0"]  # 12 frames at 3 fps, 0.5-3.5 s
    frames = sample_video(tvqa, SAMPLERS.get("uniform")(num_frames=3), 32, 30.0)
    # frames 1..10 (0.333 s to 3.667 s: the frames on screen during the segment), midpoints of three parts
    assert frames.indices.tolist() == [2, 6, 9] and frames.size == (32, 32)
    assert frames.frames[1].mean() == pytest.approx(60, abs=2)  # frame 00007.jpg is filled with 10 * 6


def test_mvbench_scores_per_task(benches):
    bench = get("mvbench")
    items = bench.read(benches["mvbench"])
    order = ["action_localization/0", "action_sequence/0", "episodic_reasoning/0", "moving_count/0", "moving_count/1"]
    assert [i.id for i in items] == ["action_sequence/0", "action_localization/0", "moving_count/0", "moving_count/1",
                                     "episodic_reasoning/0"]  # MVBench's task order
    answers = dict(zip(order, ["I am not sure", "(B) Opened the door.", "C", "2", "The answer is (A)"]))
    summary = summarize(bench, lines_for(bench, items, [answers[i.id] for i in items]))
    assert summary["overall"] == {"acc": 0.6, "correct": 3, "total": 5, "unparsed": 1, "mean_acc": 0.625, "errors": 0}
    tasks = summary["breakdown"]["task"]
    assert {k: v["acc"] for k, v in tasks.items()} == {"action_localization": 0.0, "action_sequence": 1.0,
                                                       "episodic_reasoning": 1.0, "moving_count": 0.5}
    metrics = flat_metrics("mvbench", bench, summary)
    assert metrics["eval/mvbench/acc"] == 0.6 and metrics["eval/mvbench/mean_acc"] == 0.625
    assert metrics["eval/mvbench/task/moving_count"] == 0.5 and metrics["eval/mvbench/unparsed"] == 1.0


def test_videomme_reads_the_parquet_rows_and_subtitles(benches):
    data = benches["videomme"]
    bench = get("videomme")
    plain = bench.read(data)
    assert [(i.id, i.category, i.answer, i.options) for i in plain] == [
        ("001-1", "short", "C", ["One.", "Two.", "Three.", "Four."]),
        ("001-2", "short", "A", ["Mars.", "Venus.", "Earth.", "Jupiter."]),
        ("802-1", "long", "D", ["1-0.", "2-1.", "0-0.", "3-2."])]
    assert plain[0].video == data / "data/vidA.mp4" and plain[0].subtitles is None
    assert plain[2].groups == {"domain": "Sports Competition", "task_type": "OCR Problems"}
    assert bench.prompt(plain[0]) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only the "
        "letter (A, B, C, or D) of the correct option.\nHow many planets are shown?\nA. One.\nB. Two.\nC. Three.\n"
        "D. Four.\nThe best answer is:")
    subs = bench.read(data, subtitles=True)
    # the lines on screen at a sampled frame: 0.5 s and 2.5 s see the first line only; the markup is removed
    assert bench.prompt(subs[0], [0.5, 2.5]).startswith(
        "This video's subtitles are listed below:\nhello there\nSelect the best answer to the following "
        "multiple-choice question based on the video and the subtitles.")
    assert "late line" in bench.prompt(subs[0], [4.5])
    assert "\nNo subtitles available\n" in bench.prompt(subs[2], [0.5])  # vidB has no .srt
    assert bench.label(True) == "videomme_w_subtitle"


def test_videomme_scores_by_duration_and_domain(benches):
    bench = get("videomme")
    items = bench.read(benches["videomme"])
    summary = summarize(bench, lines_for(bench, items, ["C", "The best answer is B", "D. 3-2."]))
    assert summary["overall"]["acc"] == 0.6667  # 2 of 3, rounded to 4 places
    assert {k: v["acc"] for k, v in summary["breakdown"]["duration"].items()} == {"long": 1.0, "short": 0.5}
    assert summary["breakdown"]["domain"]["Knowledge"] == {"acc": 0.5, "correct": 1, "total": 2}
    assert flat_metrics("videomme", bench, summary)["eval/videomme/duration/short"] == 0.5


def test_longvideobench_reads_the_json_and_the_parquet_copy(benches, tmp_path):
    from tests.evaluation.conftest import write_parquet

    data = benches["longvideobench"]
    bench = get("longvideobench")
    items = bench.read(data)
    assert [(i.id, i.category, i.answer, len(i.options)) for i in items] == [
        ("86CxyhFV9MI_0", "15", "B", 4), ("7F9IrtSHmc0_3", "600", "E", 5)]
    assert items[0].video == data / "videos/86CxyhFV9MI.mp4" and items[1].groups == {"question_category": "T3O"}
    assert bench.prompt(items[0]) == ("What does the man hold?\nA. a cup\nB. a phone\nC. a pen\nD. a book\n"
                                      "Answer with the option's letter from the given choices directly.")
    # lmms-eval's Parquet copy: option0..option4, "N/A" for an absent one
    write_parquet(tmp_path / "validation-00000-of-00001.parquet", [
        {"id": "x_0", "video_path": "x.mp4", "question": "q?", "option0": "a", "option1": "b", "option2": "c",
         "option3": "d", "option4": "N/A", "correct_choice": 3, "duration_group": 60, "question_category": "E2O"}])
    (row,) = bench.read(tmp_path)
    assert row.options == ["a", "b", "c", "d"] and row.answer == "D" and row.category == "60"
    summary = summarize(bench, lines_for(bench, items, ["B", "E. five"]))
    assert summary["overall"]["acc"] == 1.0
    assert summary["breakdown"]["question_category"]["S2E"]["acc"] == 1.0


def test_longvideobench_refuses_the_unanswered_test_split(tmp_path):
    (tmp_path / "lvb_test_wo_gt.json").write_text("[]")
    with pytest.raises(BenchmarkDataError, match="no answers"):
        get("longvideobench").read(tmp_path)


def test_mlvu_reads_its_task_files_and_reports_the_task_mean(benches):
    data = benches["mlvu"]
    bench = get("mlvu")
    items = bench.read(data)  # DATA holds MLVU/ as unpacked
    assert [(i.id, i.category, i.answer) for i in items] == [("1_plotQA/0", "plotQA", "A"), ("4_count/0", "count", "C")]
    assert items[1].video == data / "MLVU/video/4_count/count_1.mp4"
    assert bench.prompt(items[1]) == ("Question: How many times does the man jump?\nOptions:\n(A) 2\n(B) 3\n(C) 4\n"
                                      "(D) 5\nOnly give the best option.")
    summary = summarize(bench, lines_for(bench, items, ["(A)", "3"]))
    assert summary["overall"]["acc"] == 0.5 and summary["overall"]["mean_acc"] == 0.5


def test_charades_reads_the_sta_text_and_lmms_evals_rows(benches, tmp_path):
    from tests.evaluation.conftest import write_parquet

    data = benches["charades_sta"]
    bench = get("charades_sta")
    items = bench.read(data)
    assert [(i.video.name, i.question, i.span) for i in items] == [
        ("AAA01.mp4", "person opens a door.", (1.0, 3.0)), ("BBB02.mp4", "person sits down", (0.0, 2.0))]
    assert bench.prompt(items[0]).endswith("textual sentence: person opens a door. Please return its start time and "
                                           "end time.")
    write_parquet(tmp_path / "test-00000-of-00001.parquet", [
        {"video": "AAA01.mp4", "caption": "person opens a door", "timestamp": [1.0, 3.0]},
        {"video": "BBB02.mp4", "caption": "person sits down", "timestamp": [0.0, 2.0]}])
    rows = bench.read(tmp_path)
    assert [(i.video, i.span) for i in rows] == [(tmp_path / "Charades_v1_480/AAA01.mp4", (1.0, 3.0)),
                                                 (tmp_path / "Charades_v1_480/BBB02.mp4", (0.0, 2.0))]
    (tmp_path / "lines").mkdir()  # a timestamp may also be written as a string
    (tmp_path / "lines/charades.jsonl").write_text('{"video": "C.mp4", "caption": "x", "timestamp": "[0.5, 2.0]"}\n')
    assert bench.read(tmp_path / "lines")[0].span == (0.5, 2.0)


def test_charades_scores_recall_at_iou_from_text_and_head(benches):
    bench = get("charades_sta")
    items = bench.read(benches["charades_sta"])
    # text: (1.5, 3.0) vs (1, 3) -> IoU 0.75; (2, 4) vs (0, 2) -> 0. head: (1, 2) vs (1, 3) -> 0.5; none for the second
    lines = lines_for(bench, items, ["The event happens in 1.5 - 3.0 seconds.", "from 2 to 4"], head={0: [(1.0, 2.0)]})
    overall = summarize(bench, lines)["overall"]
    assert overall["text"] == {"r1@0.3": 0.5, "r1@0.5": 0.5, "r1@0.7": 0.5, "miou": 0.375, "total": 2, "unparsed": 0}
    assert overall["head"] == {"r1@0.3": 0.5, "r1@0.5": 0.5, "r1@0.7": 0.0, "miou": 0.25, "total": 2, "answered": 1}
    metrics = flat_metrics("charades_sta", bench, {"overall": overall, "breakdown": {}})
    assert metrics["eval/charades_sta/r1@0.5"] == 0.5 and metrics["eval/charades_sta/head/miou"] == 0.25
    unread = summarize(bench, lines_for(bench, items, ["no idea", "at the start"]))["overall"]
    assert unread["text"]["unparsed"] == 2 and unread["text"]["miou"] == 0.0 and "head" not in unread
    assert iou((0, 1), (2, 3)) == 0.0 and iou((0, 2), (0, 2)) == 1.0


def test_a_limit_takes_items_from_every_category_in_turn(benches):
    items = get("mvbench").read(benches["mvbench"])
    picked = select(items, 3)
    assert [i.id for i in picked] == ["action_sequence/0", "action_localization/0", "moving_count/0"]
    assert {i.category for i in select(items, 4)} == {"action_sequence", "episodic_reasoning", "moving_count",
                                                       "action_localization"}
    assert select(items, None) == items == select(items, 99)


@pytest.mark.parametrize("name,layout", [("mvbench", "json/"), ("videomme", "videomme/test-00000-of-00001.parquet"),
                                         ("longvideobench", "lvb_val.json"), ("mlvu", "json/"),
                                         ("charades_sta", "charades_sta_test.txt")])
def test_a_folder_in_another_layout_says_what_is_expected(tmp_path, name, layout):
    with pytest.raises(BenchmarkDataError, match=layout.split("/")[0]):
        get(name).read(tmp_path)


def test_bad_records_name_the_file_and_record(tmp_path):
    from tests.evaluation.conftest import write_json

    write_json(tmp_path / "json/moving_count.json", [{"video": "a.mp4", "question": "q", "candidates": ["1", "2"],
                                                      "answer": "7"}])
    with pytest.raises(BenchmarkDataError, match=r"moving_count.json record 0: the answer '7' is not one"):
        get("mvbench").read(tmp_path)
    write_json(tmp_path / "json/moving_count.json", [{"video": "a.mp4", "question": "q"}])
    with pytest.raises(BenchmarkDataError, match=r"record 0: missing field\(s\) \['candidates', 'answer'\]"):
        get("mvbench").read(tmp_path)
    with pytest.raises(BenchmarkDataError, match="unknown benchmark 'mvbenc'.*Did you mean 'mvbench'"):
        get("mvbenc")


def test_the_synthetic_set_is_in_mvbench_format(tmp_path):
    from lrc.data.synth.bench import synthesize_mvbench

    summary = synthesize_mvbench(tmp_path / "syn", videos=3, size=32)
    assert summary["questions"] == {"moving_attribute": 6, "moving_direction": 3, "moving_count": 3}
    items = get("mvbench").read(tmp_path / "syn")
    assert len(items) == 12 and all(i.video.is_file() for i in items)
    assert all(Path(i.video).parent == tmp_path / "syn/video/clevrer/video_validation" for i in items)
    again = synthesize_mvbench(tmp_path / "again", videos=3, size=32)  # deterministic in the seed
    assert again["questions"] == summary["questions"]
    first, second = (tmp_path / f"{d}/json/moving_count.json" for d in ("syn", "again"))
    assert first.read_text() == second.read_text()
