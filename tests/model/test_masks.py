"""Mask losses and DAVIS-style J / F on hand-made cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from lrc.model.masks import (
    boundary_f,
    boundary_tolerance,
    dice_loss,
    j_and_f,
    mask_boundary,
    mask_iou,
    sigmoid_bce_loss,
    sigmoid_focal_loss,
)


def square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[top:top + side, left:left + side] = True
    return m


def test_identical_masks_score_one():
    m = square(32, 4, 6, 10)[None].repeat(3, 1, 1)
    assert torch.equal(mask_iou(m, m), torch.ones(3))
    assert torch.equal(boundary_f(m, m), torch.ones(3))
    assert j_and_f(m, m) == {"j": 1.0, "f": 1.0, "jf": 1.0}


def test_disjoint_masks_score_zero():
    a, b = square(32, 0, 0, 8), square(32, 20, 20, 8)  # boundaries far apart (tolerance is 1 px at 32 px)
    assert mask_iou(a, b).item() == 0.0
    assert boundary_f(a, b).item() == 0.0
    assert j_and_f(a, b)["jf"] == 0.0


def test_iou_hand_value():
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2, :2] = True  # 4 px
    b[0, :2, 1:3] = True  # 4 px, overlap 2 → IoU 2 / 6
    assert mask_iou(a, b).item() == pytest.approx(1 / 3)


def test_empty_conventions():
    empty = torch.zeros(2, 16, 16, dtype=torch.bool)
    full = square(16, 4, 4, 6)[None].repeat(2, 1, 1)
    assert torch.equal(mask_iou(empty, empty), torch.ones(2))  # nothing to find, nothing found
    assert torch.equal(boundary_f(empty, empty), torch.ones(2))
    assert torch.equal(mask_iou(empty, full), torch.zeros(2))
    assert torch.equal(boundary_f(empty, full), torch.zeros(2))
    assert torch.equal(boundary_f(full, empty), torch.zeros(2))


def test_boundary_is_the_mask_outline():
    m = square(8, 2, 2, 4)
    b = mask_boundary(m)[0]
    expected = m.clone()
    expected[3:5, 3:5] = False  # the 2×2 interior
    assert torch.equal(b, expected)
    # A mask touching the image border has its boundary there too.
    assert mask_boundary(torch.ones(5, 5, dtype=torch.bool))[0].sum() == 16


def test_boundary_f_tolerates_a_one_pixel_shift_but_not_more():
    a = square(32, 8, 8, 12)
    assert boundary_tolerance(32, 32) == 1  # ceil(0.008 · 45.3)
    assert boundary_f(a, square(32, 8, 9, 12)).item() == 1.0  # every boundary pixel within 1 px
    shifted = boundary_f(a, square(32, 8, 12, 12)).item()  # vertical edges 4 px away
    assert 0 < shifted < 1
    # J is stricter than F for the one-pixel shift.
    assert mask_iou(a, square(32, 8, 9, 12)).item() == pytest.approx(132 / 156)


def test_boundary_tolerance_follows_davis():
    assert boundary_tolerance(480, 854) == math.ceil(0.008 * math.hypot(480, 854))  # DAVIS 480p → 8 px
    assert boundary_tolerance(10, 10) == 1
    assert boundary_tolerance(100, 100, bound_th=3) == 3


def test_j_and_f_averages_over_frames():
    a = torch.stack([square(16, 2, 2, 6), square(16, 2, 2, 6)])
    b = torch.stack([square(16, 2, 2, 6), torch.zeros(16, 16, dtype=torch.bool)])
    out = j_and_f(a, b)
    assert out["j"] == pytest.approx(0.5) and out["f"] == pytest.approx(0.5) and out["jf"] == pytest.approx(0.5)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(torch.zeros(2, 8, 8, dtype=torch.bool), torch.zeros(2, 8, 9, dtype=torch.bool))


def test_dice_hand_values():
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    confident = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    assert dice_loss(confident, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = -confident
    # p = [0, 0, 1, 1]: 1 − (0 + 1) / (2 + 2 + 1) = 0.8
    assert dice_loss(wrong, target).item() == pytest.approx(0.8, abs=1e-6)
    # logits 0 → p = 0.5 everywhere: 1 − (2·1 + 1) / (2 + 2 + 1) = 0.4
    assert dice_loss(torch.zeros(1, 4), target).item() == pytest.approx(0.4)
    # Empty target, empty prediction: smoothing makes it ~0, not a division by zero.
    assert dice_loss(torch.full((1, 4), -20.0), torch.zeros(1, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_bce_and_focal_hand_values():
    target = torch.tensor([[1.0, 0.0]])
    zero = torch.zeros(1, 2)
    assert sigmoid_bce_loss(zero, target).item() == pytest.approx(math.log(2))
    # Focal at p = 0.5: α_t · 0.5² · log 2, α_t = 0.25 for the positive and 0.75 for the negative pixel.
    assert sigmoid_focal_loss(zero, target).item() == pytest.approx((0.25 + 0.75) / 2 * 0.25 * math.log(2))
    x = torch.randn(3, 5, 5)
    t = torch.rand(3, 5, 5) > 0.5
    assert sigmoid_bce_loss(x, t).item() == pytest.approx(F.binary_cross_entropy_with_logits(x, t.float()).item())
    assert sigmoid_focal_loss(x, t, alpha=-1, gamma=0).item() == pytest.approx(sigmoid_bce_loss(x, t).item())


def test_losses_per_sample_and_differentiable():
    x = torch.randn(4, 8, 8, requires_grad=True)
    t = torch.rand(4, 8, 8) > 0.5
    for fn in (dice_loss, sigmoid_bce_loss, sigmoid_focal_loss):
        per = fn(x, t, reduction="none")
        assert per.shape == (4,)
        assert fn(x, t).item() == pytest.approx(per.mean().item())
    dice_loss(x, t).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        dice_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
