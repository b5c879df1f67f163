"""What a chat turn returns: the answer's text and the TPO heads' outputs in user units.

* ``spans``: temporal grounding, ``Span(start, end, score)`` in seconds, best first (``cgdetr``);
* ``boxes``: ``Box`` per answer box: normalised ``xyxy`` with the frame (index into the sampled frames)
  and its time when the box belongs to one (a mask head's per-frame boxes; ``region``'s box is the one
  the question asks about, ``frame`` None);
* ``masks``: ``Masks``, a boolean array ``[T, H, W]`` over the sampled frames, at the video's own size
  when it was read from a file, with COCO run-length encoding (``rle()``, lrc/data/rle.py) and PNG export.

``ChatResult.to_dict()`` is JSON-ready (masks as RLE): what ``lrc infer`` writes per record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Span:
    start: float  # seconds
    end: float
    score: float  # the head's confidence (foreground probability)

    def to_dict(self) -> dict[str, float]:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 4)}


@dataclass
class Box:
    xyxy: tuple[float, float, float, float]  # normalised to the frame, in [0, 1]
    frame: int | None = None  # index into the sampled frames, when the box is one frame's
    time: float | None = None  # that frame's time in seconds

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a ``width`` × ``height`` frame."""
        x1, y1, x2, y2 = self.xyxy
        return round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"xyxy": [round(v, 4) for v in self.xyxy]}
        if self.frame is not None:
            out.update(frame=self.frame, time=None if self.time is None else round(self.time, 3))
        return out


@dataclass
class Masks:
    array: np.ndarray  # bool [T, H, W]
    timestamps: list[float]  # seconds, one per frame

    def rle(self) -> list[dict[str, Any]]:
        """One COCO RLE (``{"size": [H, W], "counts": str}``) per frame (lrc/data/rle.py)."""
        from lrc.data.rle import encode

        return [encode(frame) for frame in self.array]

    def boxes(self) -> list[Box]:
        """The bounding box of each frame's mask that is not empty."""
        out = []
        t, h, w = self.array.shape
        for i in range(t):
            ys, xs = np.nonzero(self.array[i])
            if len(xs):
                out.append(Box((xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h), frame=i,
                               time=self.timestamps[i] if i < len(self.timestamps) else None))
        return out

    def save_png(self, folder: str | Path, prefix: str = "mask") -> list[Path]:
        """One black-and-white PNG per frame, ``{prefix}_{frame:04d}.png`` in ``folder``."""
        from PIL import Image

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, frame in enumerate(self.array):
            path = folder / f"{prefix}_{i:04d}.png"
            Image.fromarray(frame.astype(np.uint8) * 255).save(path)
            paths.append(path)
        return paths


@dataclass
class ChatResult:
    text: str
    question: str
    spans: list[Span] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    masks: Masks | None = None
    history: list[tuple[str, str]] = field(default_factory=list)  # every turn so far, this one included
    token_ids: list[int] = field(default_factory=list)
    heads: dict[str, Any] = field(default_factory=dict)  # each head's raw decoded output, by task
    timestamps: list[float] = field(default_factory=list)  # the sampled frames' times, seconds
    duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text}
        if self.spans:
            out["spans"] = [s.to_dict() for s in self.spans]
        if self.boxes:
            out["boxes"] = [b.to_dict() for b in self.boxes]
        if self.masks is not None:
            out["masks"] = {"rle": self.masks.rle(), "timestamps": [round(t, 3) for t in self.masks.timestamps]}
        out["timestamps"] = [round(t, 3) for t in self.timestamps]
        return out


def structured(heads: dict[str, Any], timestamps: list[float], mask_size: tuple[int, int] | None = None
               ) -> tuple[list[Span], list[Box], Masks | None]:
    """Spans, boxes and masks from the heads' decoded outputs, by what each output holds (``spans`` +
    ``scores``; ``box``; ``masks`` + per-frame ``frame_boxes``), so a third-party head of the same shape is
    read alike. Masks are resized (nearest) to ``mask_size`` ``(H, W)`` when given."""
    spans: list[Span] = []
    boxes: list[Box] = []
    masks = None
    for out in heads.values():
        if not isinstance(out, dict):
            continue
        if "spans" in out:
            scores = out.get("scores") or [float("nan")] * len(out["spans"])
            spans += [Span(float(s), float(e), float(p)) for (s, e), p in zip(out["spans"], scores)]
        if "masks" in out:
            array = np.asarray(out["masks"].cpu() if hasattr(out["masks"], "cpu") else out["masks"]).astype(bool)
            if mask_size is not None and array.shape[1:] != tuple(mask_size):
                array = _resize_nearest(array, mask_size)
            masks = Masks(array, list(timestamps))
            boxes += masks.boxes()
        elif "box" in out:
            boxes.append(Box(tuple(float(v) for v in out["box"])))
    return spans, boxes, masks


def _resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(array.astype(np.uint8))[:, None].float()
    return (F.interpolate(t, size=tuple(size), mode="nearest")[:, 0] > 0.5).numpy()
