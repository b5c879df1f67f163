"""TPO region head that also looks at the frames: the ``<box>`` hidden state as a query over pixels.

TPO's own region head (``region``, paper §3.2) decodes a box from the ``<box>`` hidden state alone, so
the *LLM* must carry where the object is. An 8B InternVL does; a tiny random-init LLM trained for
minutes on CPU does not (docs/tpo.md: its hidden state at ``<box>`` barely varies across samples,
and the box mIoU stays at its untrained value). This head splits the work the way TPO's mask head
splits it with SAM2: the LLM says *what* and *when* (the hidden state knows the colour, shape and
FrameK the question names), a small vision path says *where*:

    frames [T, 3, S, S] ─conv stem (stride 8)─▶ features [T, h, w, d] + 2-D position + frame index
    <box> hidden ─linear─▶ query;  attention of the query over all T·h·w cells
      → attended feature and the attention-weighted cell centre (a soft arg-max)
    [hidden, attended feature, centre] ─MLP─▶ box offset from the centre and its size

Besides the region head's box loss, the attention itself is supervised: cross entropy that puts its
mass on the cell holding the gold box's centre in the frame the question names (the ``frame`` target),
as keypoint and CenterNet-style detectors supervise a heat map. Without it the query has to find the
object through the box regression alone, which a soft arg-max starting from a uniform attention
(centre 0.5, 0.5) does slowly.

Everything else — the box encoder for ``<region>`` inputs, the loss (2·L1 + GIoU/5), decoding and
metrics — is the ``region`` head's. Use it by naming it in the region slot:
``model.heads.region.name=region_grounding``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert

from lrc.protocols import HeadBatch
from lrc.constraints import NonNegativeFloat, PositiveInt, UnitInterval
from lrc.ops import gelu_mlp
from lrc.registry import HEADS
from lrc_plugins.heads.region import RegionHead


def _sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code ``[h·w, dim]`` (half the channels for y, half for x)."""
    quarter = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    parts = [f(c.reshape(-1, 1) * freq) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    code = torch.cat(parts, dim=1)
    return F.pad(code, (0, dim - code.shape[1]))


class FrameLocator(nn.Module):
    """A task hidden state as a query over a small conv map of the frames: where is the object it names.

    ``frames [T, 3, S, S] ─conv stem (stride 8)─▶ cells [T, h·w, d]`` (+ 2-D position + frame index); the
    query's attention over the cells gives the attended feature and the attention-weighted cell centre
    (a soft arg-max); ``[hidden, feature, centre] ─MLP─▶`` the box's offset from that centre and its size.
    ``per_frame=False`` attends over all T·h·w cells at once (one box: the region head's "where is X in
    FrameK"); ``per_frame=True`` attends within each frame (one box per frame: the mask head's track).
    Shared by ``region_grounding`` and ``sam2_mask(box_source=frames)``.
    """

    def __init__(self, hidden_size: int, mlp_hidden: int, d_model: int, image_size: int, max_frames: int,
                 owner: str):
        super().__init__()
        # sizes >= 1: the owning head's annotations say so (lrc.constraints checks them before building)
        if image_size % 8:
            raise ValueError(f"{owner}: image_size must be a multiple of 8 (the locator stem's stride), got {image_size}")
        self.owner, self.image_size, self.d_model, self.max_frames = owner, image_size, d_model, max_frames
        self.grid = image_size // 8
        # three stride-2 convolutions: 64 px → an 8×8 grid of cells, each seeing a 15-px neighbourhood
        self.stem = nn.Sequential(
            nn.Conv2d(3, d_model // 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(d_model // 2, d_model, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(d_model, d_model, 3, stride=2, padding=1))
        self.frame_embed = nn.Embedding(max_frames, d_model)
        self.to_query = nn.Linear(hidden_size, d_model)
        self.to_key = nn.Linear(d_model, d_model)
        self.decoder = gelu_mlp(hidden_size + d_model + 2, mlp_hidden, 4)

    def cells(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell features ``[T, h·w, d]`` (with position and frame index) and cell centres ``[h·w, 2]`` (x, y)."""
        t = frames.shape[0]
        if t > self.max_frames:
            raise ValueError(f"{self.owner}: a sample has {t} frames, more than max_frames={self.max_frames}; "
                             "raise model.heads.<label>.max_frames")
        x = frames.to(self.stem[0].weight.dtype)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        feats = self.stem(x)  # [T, d, h, w]
        h, w = feats.shape[-2:]
        feats = feats.flatten(2).transpose(1, 2)  # [T, h·w, d]
        feats = feats + _sincos_2d(h, w, self.d_model).to(feats) + self.frame_embed.weight[:t, None].to(feats)
        ys, xs = torch.meshgrid((torch.arange(h, device=x.device) + 0.5) / h, (torch.arange(w, device=x.device) + 0.5) / w,
                                indexing="ij")
        return feats, torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).to(feats)

    def forward(self, hidden: torch.Tensor, frames: list[torch.Tensor], per_frame: bool
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Boxes (normalised xyxy; ``[T_i, 4]`` per frame or ``[1, 4]``) and attention scores ``[T_i, h·w]`` per sample."""
        hidden = hidden.to(self.decoder[0].weight.dtype)
        queries = self.to_query(hidden)
        boxes, scores = [], []
        for b, sample_frames in enumerate(frames):
            cells, where = self.cells(sample_frames)
            score = self.to_key(cells) @ queries[b] / math.sqrt(self.d_model)  # [T, h·w]
            if per_frame:
                attn = score.softmax(-1)
                found, centre = torch.einsum("tc,tcd->td", attn, cells), attn @ where
            else:
                attn = score.flatten().softmax(0).view_as(score)
                found, centre = torch.einsum("tc,tcd->d", attn, cells)[None], (attn.sum(0) @ where)[None]
            out = self.decoder(torch.cat([hidden[b].expand(found.shape[0], -1), found, centre], dim=1))
            # the centre is the attention's soft arg-max moved by at most half a frame; size through a sigmoid
            cxcy = (centre + 0.5 * torch.tanh(out[:, :2])).clamp(0, 1)
            boxes.append(box_convert(torch.cat([cxcy, out[:, 2:].sigmoid()], dim=1), "cxcywh", "xyxy").clamp(0, 1))
            scores.append(score)
        return boxes, scores

    def cell_of(self, box: torch.Tensor | list[float]) -> int:
        """Index (row-major) of the grid cell holding a normalised xyxy box's centre: the attention's target."""
        x1, y1, x2, y2 = (float(v) for v in box)
        col = min(max(int((x1 + x2) / 2 * self.grid), 0), self.grid - 1)
        row = min(max(int((y1 + y2) / 2 * self.grid), 0), self.grid - 1)
        return row * self.grid + col


@HEADS.register("region_grounding")
class RegionGroundingHead(RegionHead):
    """The region head whose ``<box>`` hidden state also queries a small convolutional feature map of the sampled
    frames: the vision side says *where*, the LLM *what* (for LLMs too small to carry locations; docs/tpo.md).

    Args:
        mlp_hidden: hidden width of the box MLPs, as in ``region``.
        d_model: width of the frames' feature map and of the query.
        image_size: frames are resized to this side for the feature map (a multiple of 8, the stem's stride).
        max_frames: most frames a sample may have (size of the frame position table).
        l1_weight: weight of the L1 loss, a mean over the box coordinates.
        giou_weight: weight of the generalised IoU loss.
        attention_weight: weight of the cross entropy that puts the query's attention on the gold box centre's cell.
        iou_threshold: IoU at which a predicted box counts as correct (metric ``acc@<threshold>``).
    """

    def __init__(self, hidden_size: PositiveInt, mlp_hidden: PositiveInt = 2048, d_model: PositiveInt = 64,
                 image_size: PositiveInt = 64, max_frames: PositiveInt = 512, l1_weight: NonNegativeFloat = 2.0,
                 giou_weight: NonNegativeFloat = 0.2, attention_weight: NonNegativeFloat = 1.0,
                 iou_threshold: UnitInterval = 0.5):
        super().__init__(hidden_size, mlp_hidden, l1_weight, giou_weight, iou_threshold)
        # replaces the region head's hidden-only decoder: (dx, dy, w, h) from hidden + what the query found
        del self.decoder
        self.locator = FrameLocator(hidden_size, mlp_hidden, d_model, image_size, max_frames, "region_grounding")
        self.attention_weight = attention_weight

    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]:
        boxes, scores = self.locator(batch.task_hidden, batch.frames, per_frame=False)
        # attention scores over all T·h·w cells, padded to the longest sample (samples differ in frame count)
        flat = [s.flatten() for s in scores]
        padded = torch.nn.utils.rnn.pad_sequence(flat, batch_first=True, padding_value=float("-inf"))
        return {"boxes": torch.cat(boxes), "attention": padded}

    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        terms = super().loss(predictions, batch)
        cells = self.locator.grid ** 2
        gold = [int(t["frame"]) * cells + self.locator.cell_of(t["box"]) for t in batch.targets]
        scores = predictions["attention"].float()
        attention = F.cross_entropy(scores, torch.tensor(gold, device=scores.device))
        terms["attention"] = attention
        terms["loss"] = terms["loss"] + self.attention_weight * attention
        return terms
