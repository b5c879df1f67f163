"""The region head's loss against TPO's box loss (its released code, restated): 2·L1 + GIoU/5, the L1 a mean
over every coordinate of every box."""

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou

from lrc.protocols import HeadBatch
from lrc.registry import HEADS


def tpo_box_loss(src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TPO's box loss (modeling_videochate.box_loss), restated: ``F.l1_loss(reduction='none')`` summed and
    divided by its element count, and GIoU over the predicted boxes that are well formed."""
    l1 = F.l1_loss(src, target, reduction="none")
    l1 = l1.sum() / l1.numel()
    valid = (src[:, 2:] >= src[:, :2]).all(-1)
    giou = (1 - torch.diag(generalized_box_iou(src[valid], target[valid]))).mean()
    return l1 * 2 + giou / 5


def test_region_loss_is_tpos_box_loss():
    torch.manual_seed(0)
    head = HEADS.get("region")(hidden_size=16, mlp_hidden=8)
    n = 5
    batch = HeadBatch(task_hidden=torch.randn(n, 16), query_hidden=[torch.zeros(0, 16)] * n,
                      frame_features=[torch.zeros(2, 16)] * n, frames=[torch.zeros(2, 3, 8, 8)] * n,
                      timestamps=[torch.arange(2.0)] * n, durations=torch.full((n,), 2.0),
                      targets=[{"box": b, "frame": 0} for b in torch.tensor(
                          [[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.9], [0.5, 0.1, 0.9, 0.2],
                           [0.2, 0.7, 0.3, 0.8]])])
    pred = head(batch)
    terms = head.loss(pred, batch)
    gold = torch.stack([t["box"] for t in batch.targets])
    torch.testing.assert_close(terms["loss"], tpo_box_loss(pred["boxes"], gold))
    torch.testing.assert_close(terms["l1"], (pred["boxes"] - gold).abs().mean())
