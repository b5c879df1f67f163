"""What chat results hold (spans, boxes, masks with RLE and PNGs) and batch inference's bookkeeping."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lrc.data.rle import decode
from lrc.inference.batch import _correct, _prompt, finished_ids
from lrc.inference.chat import InferenceError
from lrc.inference.results import Box, structured


def test_heads_outputs_become_spans_boxes_and_masks(tmp_path):
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, 1:3, 0:2] = True
    masks[2, 3, 3] = True
    heads = {"temporal": {"spans": [[1.0, 2.5], [0.0, 1.0]], "scores": [0.9, 0.2], "saliency": [0.1, 0.2, 0.3]},
             "region": {"box": [0.1, 0.2, 0.3, 0.4]},
             "mask": {"masks": masks, "box": [0.0, 0.25, 0.5, 0.75]}}
    spans, boxes, result = structured(heads, [0.5, 1.5, 2.5], mask_size=(8, 8))
    assert [(s.start, s.end, s.score) for s in spans] == [(1.0, 2.5, 0.9), (0.0, 1.0, 0.2)]
    assert boxes[0] == Box((0.1, 0.2, 0.3, 0.4))
    assert result.array.shape == (3, 8, 8) and result.array[0, 2:6, 0:4].all() and result.array[0].sum() == 16
    assert [(b.frame, b.time, b.xyxy) for b in boxes[1:]] == [(0, 0.5, (0.0, 0.25, 0.5, 0.75)), (2, 2.5, (0.75, 0.75, 1.0, 1.0))]
    assert boxes[1].pixels(640, 480) == (0, 120, 320, 360)
    assert all(np.array_equal(decode(r), m) for r, m in zip(result.rle(), result.array))
    paths = result.save_png(tmp_path / "m")
    assert len(paths) == 3 and np.array_equal(np.asarray(Image.open(paths[0])) > 0, result.array[0])


def test_a_records_turns_become_history_question_and_answer():
    turns = [{"from": "human", "value": "<video>\nq1"}, {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"},
             {"from": "gpt", "value": "a2"}]
    assert _prompt(turns) == ([("<video>\nq1", "a1")], "q2", "a2")
    assert _prompt(turns[:3]) == ([("<video>\nq1", "a1")], "q2", None)
    with pytest.raises(InferenceError, match="no human turn"):
        _prompt(turns[1:2])


@pytest.mark.parametrize("prediction, answer, right", [("B", "B", True), ("b.", "B", True), ("B) red", "B", True),
                                                        ("Blue", "B", False), ("red", "red", True), ("A", "B", False)])
def test_mcq_correctness(prediction, answer, right):
    assert _correct(prediction, answer) is right


def test_resuming_drops_a_line_cut_off_mid_write(tmp_path):
    out = tmp_path / "pred.jsonl"
    out.write_text(json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "b"}) + '\n{"id": "c", "predi')
    assert finished_ids(out) == {"a", "b"}
    assert out.read_text().count("\n") == 2 and out.read_text().endswith("\n")
