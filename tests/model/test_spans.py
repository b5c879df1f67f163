"""lrc.model.spans: layouts, IoU / GIoU checked by hand, Hungarian matching, temporal-grounding metrics."""

from __future__ import annotations

import pytest
import torch

from lrc.model.spans import (
    RECALL_THRESHOLDS, best_iou, cw_to_se, giou_matrix, grounding_metrics, hungarian_match, iou_matrix,
    metric_names, paired_giou, se_to_cw,
)


def test_cw_se_round_trip_and_values():
    se = torch.tensor([[2.0, 6.0], [0.0, 1.0], [3.0, 3.0]])
    cw = se_to_cw(se)
    assert torch.equal(cw, torch.tensor([[4.0, 4.0], [0.5, 1.0], [3.0, 0.0]]))
    assert torch.equal(cw_to_se(cw), se)
    batched = torch.rand(2, 5, 2)
    assert torch.allclose(se_to_cw(cw_to_se(batched)), batched, atol=1e-6)


def test_iou_by_hand():
    a = torch.tensor([[0.0, 4.0], [2.0, 6.0]])
    b = torch.tensor([[0.0, 4.0], [2.0, 4.0], [5.0, 8.0]])
    expected = torch.tensor([
        [1.0, 2 / 4, 0.0],  # identical; [2,4] inside [0,4]; disjoint
        [2 / 6, 2 / 4, 1 / 6],  # inter 2, union 6; inter 2, union 4; inter [5,6]=1, union [2,8]=6
    ])
    assert torch.allclose(iou_matrix(a, b), expected)


def test_giou_by_hand():
    a = torch.tensor([[0.0, 2.0], [1.0, 3.0]])
    b = torch.tensor([[0.0, 2.0], [4.0, 6.0]])
    g = giou_matrix(a, b)
    assert g[0, 0] == pytest.approx(1.0)  # identical spans
    # [0,2] vs [4,6]: IoU 0, enclosure [0,6]=6, union 4 → 0 − 2/6
    assert g[0, 1] == pytest.approx(-1 / 3)
    # [1,3] vs [0,2]: inter 1, union 3, enclosure 3 → 1/3 − 0
    assert g[1, 0] == pytest.approx(1 / 3)
    # [1,3] vs [4,6]: disjoint, enclosure [1,6]=5, union 4 → −1/5
    assert g[1, 1] == pytest.approx(-0.2)
    assert (g[:, 1] < 0).all(), "disjoint spans have negative GIoU"
    # farther apart → more negative (the gradient IoU lacks)
    far = giou_matrix(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 3.0], [8.0, 9.0]]))
    assert far[0, 1] < far[0, 0] < 0
    assert torch.allclose(paired_giou(a, b), torch.diagonal(g))


def test_iou_of_zero_length_spans_is_finite():
    a = torch.tensor([[1.0, 1.0]])
    assert torch.isfinite(iou_matrix(a, a)).all() and torch.isfinite(giou_matrix(a, a)).all()


def test_iou_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[A, 2\]"):
        iou_matrix(torch.zeros(3), torch.zeros(2, 2))


def test_hungarian_match_by_hand():
    # Greedy (row by row, cheapest column) would pick (0,0)=1 then (1,1)=10: total 11.
    # The optimum is (0,1)=2 + (1,0)=2: total 4.
    cost = torch.tensor([[1.0, 2.0], [2.0, 10.0], [5.0, 5.0]])
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    assert rows.dtype == torch.long


def test_hungarian_match_more_targets_than_predictions_and_empty():
    rows, cols = hungarian_match(torch.tensor([[3.0, 1.0, 2.0]]))
    assert rows.tolist() == [0] and cols.tolist() == [1]
    rows, cols = hungarian_match(torch.zeros(4, 0))
    assert rows.numel() == 0 and cols.numel() == 0
    with pytest.raises(ValueError, match="NaN"):
        hungarian_match(torch.tensor([[float("nan")]]))


def test_best_iou_takes_the_closest_gt_span():
    assert best_iou([2.0, 4.0], [[0.0, 1.0], [2.0, 5.0]]) == pytest.approx(2 / 3)
    assert best_iou(None, [[0.0, 1.0]]) == 0.0
    assert best_iou(torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 1.0]])) == pytest.approx(1.0)


def test_grounding_metrics_by_hand():
    top1 = [[0.0, 10.0], [0.0, 4.0], [0.0, 6.0], None, [20.0, 30.0]]
    gts = [[[0.0, 10.0]], [[0.0, 10.0]], [[0.0, 10.0]], [[1.0, 2.0]], [[0.0, 5.0], [21.0, 29.0]]]
    # IoUs: 1.0, 0.4, 0.6, 0 (no prediction = miss), 0.8 (the second GT span)
    m = grounding_metrics(top1, gts)
    assert list(m) == metric_names() == ["r1@0.3", "r1@0.5", "r1@0.7", "miou"]
    assert m["miou"] == pytest.approx([1.0, 0.4, 0.6, 0.0, 0.8])
    assert m["r1@0.3"] == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert m["r1@0.5"] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert m["r1@0.7"] == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert RECALL_THRESHOLDS == (0.3, 0.5, 0.7)


def test_grounding_metrics_threshold_is_inclusive_and_errors_name_the_sample():
    m = grounding_metrics([[0.0, 5.0]], [[[0.0, 10.0]]])  # IoU exactly 0.5
    assert m["r1@0.5"] == [1.0]
    with pytest.raises(ValueError, match="sample 1 has no ground-truth span"):
        grounding_metrics([[0.0, 1.0], [0.0, 1.0]], [[[0.0, 1.0]], []])
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        grounding_metrics([[0.0, 1.0], None], [[[0.0, 1.0]]])
