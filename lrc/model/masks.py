"""Mask losses and video-segmentation metrics, shared by mask heads and evaluation.

Losses work on mask *logits* ``[N, H, W]`` (or ``[N, 1, H, W]``) against boolean / {0, 1} targets of
the same size and return one value per sample (``reduction="none"``) or their mean (``"mean"``):

* :func:`dice_loss` — 1 − soft Dice of ``sigmoid(logits)``, with +1 smoothing in numerator and
  denominator (as in SAM / SAM2 training), so an empty target and an empty prediction cost ~0;
* :func:`sigmoid_bce_loss` — binary cross-entropy with logits, averaged over pixels;
* :func:`sigmoid_focal_loss` — Lin et al. 2017 focal loss (α = 0.25, γ = 2 by default), averaged over
  pixels; SAM2 trains its decoder with focal + Dice.

Metrics follow the DAVIS benchmark (Perazzi et al. 2016) on boolean masks ``[T, H, W]``:

* J, region similarity (:func:`mask_iou`): |P ∧ G| / |P ∨ G| per frame; 1 when both are empty.
* F, contour accuracy (:func:`boundary_f`): boundary precision/recall F-measure, where a boundary pixel
  counts as matched if the other mask's boundary lies within ``ceil(0.008 · image diagonal)`` pixels
  (DAVIS ``bound_th = 0.008``; at least 1 pixel). 1 when both boundaries are empty, 0 when only one is.
* :func:`j_and_f` — J, F and their mean J&F, each averaged over the frames given.

Boundaries here are the mask pixels with a 4-neighbour outside the mask (pixels beyond the image
border count as outside), and the tolerance disc is applied with a convolution, all in torch, so the
metrics run on the device the masks are on. DAVIS's reference code marks boundaries with a one-sided
neighbour test and dilates with scikit-image; values can differ from it by a pixel's worth at the edges.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# -- losses --------------------------------------------------------------------------------------------
def _flatten_pair(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape != targets.shape:
        raise ValueError(
            f"mask loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape; "
            "resize the logits to the target size first (F.interpolate, bilinear)"
        )
    if logits.ndim < 2:
        raise ValueError(f"mask loss: expected [N, ...] with a leading sample dimension, got {tuple(logits.shape)}")
    return logits.flatten(1).float(), targets.flatten(1).to(torch.float32)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"mask loss: reduction must be 'mean' or 'none', got {reduction!r}")


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0, reduction: str = "mean",
) -> torch.Tensor:
    """1 − (2·Σ p·t + s) / (Σ p + Σ t + s) per sample, p = sigmoid(logits)."""
    x, t = _flatten_pair(logits, targets)
    p = x.sigmoid()
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return _reduce(1 - dice, reduction)


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Pixel-averaged binary cross-entropy on logits, per sample."""
    x, t = _flatten_pair(logits, targets)
    return _reduce(F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1), reduction)


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean",
) -> torch.Tensor:
    """Pixel-averaged focal loss: α_t·(1 − p_t)^γ·BCE, per sample (α < 0 disables the class weight)."""
    x, t = _flatten_pair(logits, targets)
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss.mean(1), reduction)


# -- metrics -------------------------------------------------------------------------------------------
def _as_frames(mask: torch.Tensor, name: str) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"{name}: expected a mask [H, W] or masks [T, H, W], got shape {tuple(mask.shape)}")
    return mask.bool()


def _check_same(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape:
        raise ValueError(
            f"mask metrics: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape; "
            "resize the prediction to the ground truth's frames and size first (nearest)"
        )


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """J per frame: float [T] for masks [T, H, W] (a single [H, W] mask gives [1]). Both empty → 1."""
    pred, gt = _as_frames(pred, "mask_iou"), _as_frames(gt, "mask_iou")
    _check_same(pred, gt)
    inter = (pred & gt).flatten(1).sum(1).double()
    union = (pred | gt).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).float()


def mask_boundary(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of boolean masks [T, H, W]: in the mask, with a 4-neighbour outside it (or off-image)."""
    mask = _as_frames(mask, "mask_boundary")
    x = mask[:, None].float()
    # Erosion by a 3×3 cross = "all four neighbours and the pixel itself are in the mask"; zero padding
    # makes the image border count as outside, so a mask touching the border has a boundary there.
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=x.device).view(1, 1, 3, 3)
    eroded = F.conv2d(x, cross, padding=1) > 4.5
    return mask & ~eroded[:, 0]


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of [T, H, W] by a disc of the given radius (pixel centres within ``radius``)."""
    if radius <= 0:
        return mask
    r = torch.arange(-radius, radius + 1, device=mask.device, dtype=torch.float32)
    disc = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + 1e-6).float()[None, None]
    return F.conv2d(mask[:, None].float(), disc, padding=radius)[:, 0] > 0.5


def boundary_tolerance(height: int, width: int, bound_th: float = 0.008) -> int:
    """DAVIS tolerance in pixels: ``bound_th`` itself when ≥ 1, else ceil(bound_th · diagonal), at least 1."""
    if bound_th >= 1:
        return int(round(bound_th))
    return max(1, math.ceil(bound_th * math.hypot(height, width)))


def boundary_f(pred: torch.Tensor, gt: torch.Tensor, bound_th: float = 0.008) -> torch.Tensor:
    """F per frame: float [T]; boundary precision/recall with a pixel tolerance (see the module docstring)."""
    pred, gt = _as_frames(pred, "boundary_f"), _as_frames(gt, "boundary_f")
    _check_same(pred, gt)
    radius = boundary_tolerance(pred.shape[-2], pred.shape[-1], bound_th)
    pb, gb = mask_boundary(pred), mask_boundary(gt)
    n_p = pb.flatten(1).sum(1).double()
    n_g = gb.flatten(1).sum(1).double()
    matched_p = (pb & _dilate(gb, radius)).flatten(1).sum(1).double()
    matched_g = (gb & _dilate(pb, radius)).flatten(1).sum(1).double()
    # DAVIS conventions for empty boundaries: nothing predicted → precision 1; nothing to find → recall 1.
    precision = torch.where(n_p > 0, matched_p / n_p.clamp(min=1), torch.ones_like(n_p))
    recall = torch.where(n_g > 0, matched_g / n_g.clamp(min=1), torch.ones_like(n_g))
    both_empty = (n_p == 0) & (n_g == 0)
    denom = precision + recall
    f = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
    # One side empty gives P=1, R=0 (or the reverse) and so F=0 above; both empty is a perfect match.
    return torch.where(both_empty, torch.ones_like(f), f).float()


def j_and_f(pred: torch.Tensor, gt: torch.Tensor, bound_th: float = 0.008) -> dict[str, float]:
    """``{"j", "f", "jf"}`` for one sample: per-frame J and F averaged over the frames, and their mean."""
    j = mask_iou(pred, gt).mean().item()
    f = boundary_f(pred, gt, bound_th).mean().item()
    return {"j": j, "f": f, "jf": (j + f) / 2}
