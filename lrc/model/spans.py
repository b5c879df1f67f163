"""1-D span utilities shared by the temporal head (CG-DETR) and temporal-grounding metrics.

Two span layouts are used, both as the last dimension of size 2:

* ``se``: (start, end), the layout of annotations, decoded answers and IoU;
* ``cw``: (center, width), the layout DETR-style heads regress (Moment-DETR / CG-DETR predict
  sigmoid-normalised centre and width, so both lie in [0, 1] after normalising by duration).

IoU and generalised IoU (Rezatofighi et al. 2019) follow their box definitions on the time axis.
Matching is the Hungarian assignment of DETR (Carion et al. 2020), via
``scipy.optimize.linear_sum_assignment``.

Metrics (temporal grounding, the Charades-STA protocol used by TPO and CG-DETR): the top-1 predicted span is scored by its
IoU with the ground truth (the best over the sample's GT spans); R1@IoU=θ is 1 when that IoU ≥ θ,
mIoU averages the IoU itself. A sample without a prediction (e.g. an unparsable answer) counts as a
miss, IoU 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

RECALL_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
_EPS = 1e-6  # guards unions / enclosures of zero length (two identical instants)


def cw_to_se(spans: torch.Tensor) -> torch.Tensor:
    """(center, width) → (start, end) along the last dimension."""
    center, width = spans.unbind(-1)
    return torch.stack((center - 0.5 * width, center + 0.5 * width), dim=-1)


def se_to_cw(spans: torch.Tensor) -> torch.Tensor:
    """(start, end) → (center, width) along the last dimension."""
    start, end = spans.unbind(-1)
    return torch.stack((0.5 * (start + end), end - start), dim=-1)


def _check_pair(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.ndim != 2 or a.shape[-1] != 2 or b.ndim != 2 or b.shape[-1] != 2:
        raise ValueError(f"{what}: expected spans [A, 2] and [B, 2] in (start, end), got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = a[:, None, :], b[None, :, :]
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return inter, union


def iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every span of ``a`` [A, 2] with every span of ``b`` [B, 2], both (start, end) → [A, B]."""
    _check_pair(a, b, "iou_matrix")
    inter, union = _intersection_union(a, b)
    return inter / union.clamp(min=_EPS)


def giou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU, IoU − (enclosure − union) / enclosure, in [−1, 1]; (start, end) → [A, B].

    Unlike IoU it keeps a gradient for disjoint spans: the farther apart, the more negative.
    """
    _check_pair(a, b, "giou_matrix")
    inter, union = _intersection_union(a, b)
    iou = inter / union.clamp(min=_EPS)
    a, b = a[:, None, :], b[None, :, :]
    enclosure = (torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])).clamp(min=_EPS)
    return iou - (enclosure - union) / enclosure


def paired_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of aligned pairs ``a[i]`` and ``b[i]`` ([M, 2] each, (start, end)) → [M]; the diagonal of
    :func:`giou_matrix` without building the M × M matrix (the DETR GIoU loss on matched pairs)."""
    if a.shape != b.shape or a.ndim != 2 or a.shape[-1] != 2:
        raise ValueError(f"paired_giou: expected two [M, 2] span tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    inter = (torch.minimum(a[:, 1], b[:, 1]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
    enclosure = (torch.maximum(a[:, 1], b[:, 1]) - torch.minimum(a[:, 0], b[:, 0])).clamp(min=_EPS)
    return inter / union.clamp(min=_EPS) - (enclosure - union) / enclosure


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of predictions (rows) to targets (columns).

    ``cost`` is [P, K]; returns ``(pred_index, target_index)``, two int64 tensors of length min(P, K)
    on ``cost``'s device, sorted by ``pred_index``. Unmatched predictions are the "no object" ones.
    """
    if cost.ndim != 2:
        raise ValueError(f"hungarian_match: expected a cost matrix [predictions, targets], got {tuple(cost.shape)}")
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cost.device)
        return empty, empty.clone()
    values = cost.detach().float().cpu()
    if not torch.isfinite(values).all():
        raise ValueError("hungarian_match: the cost matrix has NaN or infinite entries; check the predictions "
                         "(a diverged head) and the target spans (start/end finite, duration > 0)")
    rows, cols = linear_sum_assignment(values.numpy())
    return (torch.as_tensor(rows, dtype=torch.long, device=cost.device),
            torch.as_tensor(cols, dtype=torch.long, device=cost.device))


def _as_spans(spans: Any) -> torch.Tensor:
    t = torch.as_tensor(spans, dtype=torch.float64).detach().cpu()
    return t.reshape(-1, 2)


def best_iou(span: Sequence[float] | torch.Tensor | None, gt_spans: Any) -> float:
    """IoU of one predicted (start, end) span with the closest of the GT spans [K, 2]; 0 for no prediction."""
    if span is None or len(span) == 0:
        return 0.0
    gts = _as_spans(gt_spans)
    if gts.shape[0] == 0:
        raise ValueError("best_iou: the sample has no ground-truth span, so its IoU is undefined")
    return float(iou_matrix(_as_spans(span)[:1], gts).max())


def metric_names(thresholds: Sequence[float] = RECALL_THRESHOLDS) -> list[str]:
    """``["r1@0.3", "r1@0.5", "r1@0.7", "miou"]`` for the default thresholds."""
    return [f"r1@{t:g}" for t in thresholds] + ["miou"]


def grounding_metrics(
    top1_spans: Sequence[Sequence[float] | torch.Tensor | None],
    gt_spans: Sequence[Any],
    thresholds: Sequence[float] = RECALL_THRESHOLDS,
) -> dict[str, list[float]]:
    """Per-sample R1@IoU=θ (1.0 / 0.0) and IoU (key ``"miou"``) of each sample's top-1 span.

    ``top1_spans[i]`` is (start, end) or None (no prediction: a miss); ``gt_spans[i]`` is [K_i, 2] in the
    same unit. Average each list over the evaluation set for the reported numbers.
    """
    if len(top1_spans) != len(gt_spans):
        raise ValueError(f"grounding_metrics: {len(top1_spans)} predictions but {len(gt_spans)} targets")
    out: dict[str, list[float]] = {name: [] for name in metric_names(thresholds)}
    for i, (span, gts) in enumerate(zip(top1_spans, gt_spans)):
        if _as_spans(gts).shape[0] == 0:
            raise ValueError(f"grounding_metrics: sample {i} has no ground-truth span; temporal-grounding "
                             "samples need at least one (start, end) span in seconds")
        iou = best_iou(span, gts)
        for t in thresholds:
            out[f"r1@{t:g}"].append(1.0 if iou >= t else 0.0)
        out["miou"].append(iou)
    return out
