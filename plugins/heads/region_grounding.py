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

from lrc.heads import HeadBatch
from lrc.ops import check_number
from lrc.registry import HEADS
from lrc_plugins.heads.region import RegionHead, _mlp


def _sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code ``[h·w, dim]`` (half the channels for y, half for x)."""
    quarter = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    parts = [f(c.reshape(-1, 1) * freq) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    code = torch.cat(parts, dim=1)
    return F.pad(code, (0, dim - code.shape[1]))


@HEADS.register("region_grounding")
class RegionGroundingHead(RegionHead):
    def __init__(self, hidden_size: int, mlp_hidden: int = 2048, d_model: int = 64, image_size: int = 64,
                 max_frames: int = 512, l1_weight: float = 2.0, giou_weight: float = 0.2, attention_weight: float = 1.0,
                 iou_threshold: float = 0.5):
        for name, value in (("d_model", d_model), ("image_size", image_size), ("max_frames", max_frames)):
            check_number("region_grounding", name, value, integer=True, minimum=1)
        check_number("region_grounding", "attention_weight", attention_weight)
        if image_size % 8:
            raise ValueError(f"region_grounding: image_size must be a multiple of 8 (the stem's stride), got {image_size}")
        super().__init__(hidden_size, mlp_hidden, l1_weight, giou_weight, iou_threshold)
        self.image_size = image_size
        self.d_model = d_model
        # three stride-2 convolutions: 64 px → an 8×8 grid of cells, each seeing a 15-px neighbourhood
        self.stem = nn.Sequential(
            nn.Conv2d(3, d_model // 2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(d_model // 2, d_model, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(d_model, d_model, 3, stride=2, padding=1))
        self.frame_embed = nn.Embedding(max_frames, d_model)
        self.max_frames = max_frames
        self.to_query = nn.Linear(hidden_size, d_model)
        self.to_key = nn.Linear(d_model, d_model)
        # replaces the region head's hidden-only decoder: (dx, dy, w, h) from hidden + what the query found
        self.decoder = _mlp(hidden_size + d_model + 2, mlp_hidden, 4)
        self.attention_weight = attention_weight

    def _cells(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell features ``[T·h·w, d]`` (with position and frame index) and cell centres ``[T·h·w, 2]``."""
        t = frames.shape[0]
        if t > self.max_frames:
            raise ValueError(f"region_grounding: a sample has {t} frames, more than max_frames={self.max_frames}; "
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
        centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1).repeat(t, 1).to(feats)
        return feats.reshape(-1, self.d_model), centres

    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]:
        hidden = batch.task_hidden.to(self.decoder[0].weight.dtype)
        queries = self.to_query(hidden)
        found, centres, scores = [], [], []
        for b, frames in enumerate(batch.frames):
            cells, where = self._cells(frames)
            score = self.to_key(cells) @ queries[b] / math.sqrt(self.d_model)  # [T·h·w]
            attn = score.softmax(0)
            found.append(attn @ cells)
            centres.append(attn @ where)
            scores.append(score)
        centre = torch.stack(centres)
        out = self.decoder(torch.cat([hidden, torch.stack(found), centre], dim=1))
        # the centre is the attention's soft arg-max moved by at most half a frame; size through a sigmoid
        cxcy = (centre + 0.5 * torch.tanh(out[:, :2])).clamp(0, 1)
        boxes = box_convert(torch.cat([cxcy, out[:, 2:].sigmoid()], dim=1), "cxcywh", "xyxy").clamp(0, 1)
        # attention scores padded to the longest sample (samples differ in frame count)
        grid = self.image_size // 8
        padded = torch.nn.utils.rnn.pad_sequence(scores, batch_first=True, padding_value=float("-inf"))
        return {"boxes": boxes, "attention": padded, "grid": torch.tensor(grid)}

    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        terms = super().loss(predictions, batch)
        scores = predictions["attention"].float()
        grid = int(predictions["grid"])
        gold = []
        for t in batch.targets:
            x1, y1, x2, y2 = (float(v) for v in t["box"])
            col = min(int((x1 + x2) / 2 * grid), grid - 1)
            row = min(int((y1 + y2) / 2 * grid), grid - 1)
            gold.append(int(t["frame"]) * grid * grid + row * grid + col)
        attention = F.cross_entropy(scores, torch.tensor(gold, device=scores.device))
        terms["attention"] = attention
        terms["loss"] = terms["loss"] + self.attention_weight * attention
        return terms
