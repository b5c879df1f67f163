"""TPO region head: a box decoder from the task token, and a box encoder into the prompt (paper §3.2).

TPO's spatial grounding: the LLM answers a "where is ..." question with ``<box_begin><box>``; the
last-layer hidden state at ``<box>`` goes through a two-layer MLP (hidden → 2048 → 4) to one box.
The same head also *reads* boxes: a two-layer MLP (4 → 2048 → hidden) turns each input box of a
record (``input_boxes``) into the embedding of a ``<region>`` placeholder in the question, so the user
can point at a region ("what colour is the object at <region>?").

Boxes are normalised (x1, y1, x2, y2) in [0, 1] of the frame the question names. By default the decoder
predicts (cx, cy, w, h) through a sigmoid and converts, so every predicted box is valid (x1 ≤ x2, inside
the frame). TPO's released heads (``loc_encoder`` / ``loc_decoder``) use ReLU between the layers and
regress x1, y1, x2, y2 directly: ``activation: relu, box_format: xyxy`` computes exactly that, for weights
loaded from an InternVideo2.5 checkpoint (lrc/weights/pretrained.py maps them here). Loss as TPO weighs it: 2·L1 + GIoU/5, the L1 a mean over the boxes' coordinates (TPO's
``F.l1_loss`` averaged over all N × 4 values), GIoU from torchvision.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from lrc.constraints import NonNegativeFloat, PositiveInt, UnitInterval
from lrc.protocols import HeadBatch
from lrc.registry import HEADS


ACTIVATIONS = ("gelu", "relu")
BOX_FORMATS = ("cxcywh_sigmoid", "xyxy")


def two_layer_mlp(d_in: int, d_hidden: int, d_out: int, activation: str = "gelu") -> nn.Sequential:
    """Linear → activation → Linear (state-dict keys ``0.*``, ``2.*``, as TPO's loc_encoder / loc_decoder)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU() if activation == "relu" else nn.GELU(),
                         nn.Linear(d_hidden, d_out))


@HEADS.register("region")
class RegionHead(nn.Module):
    """TPO region head (task ``region``, ``<box>``): an MLP from the ``<box>`` hidden state to one box, and an MLP
    turning ``<region>`` input boxes into prompt embeddings (see the module docstring).

    Args:
        mlp_hidden: hidden width of both MLPs (decoder: hidden → mlp_hidden → 4; encoder: 4 → mlp_hidden →
            hidden).
        l1_weight: weight of the L1 loss, a mean over the box coordinates (TPO: 2).
        giou_weight: weight of the generalised IoU loss (TPO: 1/5).
        iou_threshold: IoU at which a predicted box counts as correct (metric ``acc@<threshold>``).
        activation: ``gelu`` or ``relu`` between each MLP's two layers (``relu`` with ``box_format: xyxy`` is TPO's
            released head, for InternVideo2.5 weights).
        box_format: ``cxcywh_sigmoid``: the decoder predicts centre and size through a sigmoid (always a valid box);
            ``xyxy``: raw corners, clamped to [0, 1].
    """

    task = "region"
    task_token = "<box>"
    begin_token = "<box_begin>"

    def __init__(self, hidden_size: PositiveInt, mlp_hidden: PositiveInt = 2048, l1_weight: NonNegativeFloat = 2.0,
                 giou_weight: NonNegativeFloat = 0.2, iou_threshold: UnitInterval = 0.5,
                 activation: Literal[ACTIVATIONS] = "gelu", box_format: Literal[BOX_FORMATS] = "cxcywh_sigmoid"):
        """``activation`` between the two layers of each MLP; ``box_format``: what the decoder's 4 outputs are
        (``cxcywh_sigmoid``: always a valid box; ``xyxy``: TPO's raw corners, clamped to [0, 1])."""
        super().__init__()
        self.decoder = two_layer_mlp(hidden_size, mlp_hidden, 4, activation)
        self.encoder = two_layer_mlp(4, mlp_hidden, hidden_size, activation)
        self.box_format = box_format
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.iou_threshold = iou_threshold

    def encode_box(self, boxes: torch.Tensor) -> torch.Tensor:
        """``[K, 4]`` normalised xyxy → ``[K, hidden]`` prompt embeddings."""
        return self.encoder(boxes.to(self.encoder[0].weight.dtype))

    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]:
        out = self.decoder(batch.task_hidden.to(self.decoder[0].weight.dtype))
        if self.box_format == "xyxy":
            return {"boxes": out.clamp(0, 1)}
        boxes = box_convert(out.sigmoid(), "cxcywh", "xyxy").clamp(0, 1)
        return {"boxes": boxes}

    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        pred = predictions["boxes"].float()
        gold = torch.stack([torch.as_tensor(t["box"], dtype=torch.float32) for t in batch.targets]).to(pred.device)
        l1 = (pred - gold).abs().mean()  # per coordinate, as TPO's box loss (mean over N x 4)
        valid = (pred[:, 2:] >= pred[:, :2]).all(-1)  # raw xyxy corners may cross; TPO scores GIoU on the rest
        if valid.any():
            giou = (1 - generalized_box_iou(pred[valid], gold[valid]).diagonal()).mean()
        else:
            giou = pred.new_tensor(2.0)  # TPO's value when no predicted box is well formed
        return {"l1": l1, "giou": giou, "loss": self.l1_weight * l1 + self.giou_weight * giou}

    def decode(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> list[dict[str, Any]]:
        return [{"box": b.tolist()} for b in predictions["boxes"].detach().float().cpu()]

    def metrics(self, outputs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Per sample: IoU with the gold box, and whether it reaches ``iou_threshold`` (Acc@0.5)."""
        if not outputs:
            return {"miou": [], f"acc@{self.iou_threshold:g}": []}
        pred = torch.tensor([o["box"] for o in outputs], dtype=torch.float32)
        gold = torch.stack([torch.as_tensor(t["box"], dtype=torch.float32) for t in targets])
        iou = box_iou(pred, gold).diagonal()
        return {"miou": iou.tolist(), f"acc@{self.iou_threshold:g}": (iou >= self.iou_threshold).float().tolist()}
