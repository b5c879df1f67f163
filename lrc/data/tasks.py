"""From an annotation record and its sampled frames to TPO head targets (paper §3.2, eq. 3).

    targets = task_targets(record, indices, timestamps, duration, frame_size=(224, 224))

Annotations are in video units (spans in seconds, one box / mask per *video* frame, "FrameK" of the
prompt); a head sees only the frames the sampler picked. This module is the one place that maps the
first onto the second, so every head and metric gets the same targets (formats: lrc/protocols.py):

* ``temporal``: ``spans`` float [K, 2] seconds (clipped to the video), ``saliency`` float [T]: 1 where
  the sampled frame's timestamp ``t`` lies in a span. Spans are read as half-open ``[start, end)``
  (a frame whose start time is ``end`` is already outside), with 1 ms of slack for the rounding of
  seconds in JSON: inside means ``start − 1 ms <= t < end − 1 ms``.
* ``region``: ``box`` float [4] normalised xyxy, ``frame`` int, the 0-based index of the sampled frame
  the question names (``"FrameK"`` → ``K − 1``); the box is the record's ``box``, or its track's box at
  the video frame that was sampled as FrameK.
* ``mask``: ``masks`` bool [T, H, W] (the track's RLE masks at the sampled video frames, resized with
  nearest-neighbour to ``frame_size``), ``boxes`` float [T, 4] (zeros where not visible), ``visible``
  bool [T].
* any record whose human turns have ``<region>`` placeholders also gets ``input_boxes`` float [K, 4]:
  the record's ``input_boxes``, or (one placeholder) its track's box at FrameK.

A record that cannot be served with these frames (FrameK beyond the sampled frames, a track shorter
than the video, an object not visible in the named frame) raises :class:`TaskTargetError` naming the
sample; the dataset turns it into a skipped sample with that reason.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lrc.data.annotations import REGION_PLACEHOLDER, Record
from lrc.data.rle import decode as rle_decode

SPAN_SLACK = 1e-3  # seconds: spans in JSON are rounded to 4 decimals; frame boundaries are 1/fps apart


class TaskTargetError(ValueError):
    """A record whose task targets cannot be built from the sampled frames."""


def _size(frame_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(frame_size, int):
        return frame_size, frame_size
    h, w = frame_size
    return int(h), int(w)


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool [h, w] mask to ``size`` (H, W), sampling pixel centres."""
    h, w = mask.shape
    H, W = size
    if (h, w) == (H, W):
        return mask
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def saliency(spans: Sequence[Sequence[float]], timestamps: Sequence[float]) -> torch.Tensor:
    """1.0 where a timestamp lies inside a span (half-open, with ``SPAN_SLACK``), else 0.0; [T]."""
    t = torch.as_tensor(np.asarray(timestamps, dtype=np.float64))
    inside = torch.zeros(t.shape, dtype=torch.bool)
    for start, end in spans:
        inside |= (t >= start - SPAN_SLACK) & (t < end - SPAN_SLACK)
    return inside.float()


class _Frames:
    """The record's frame references resolved against the sampled indices."""

    def __init__(self, rec: Record, indices: Sequence[int]):
        self.rec = rec
        self.indices = [int(i) for i in indices]

    def fail(self, what: str) -> TaskTargetError:
        return TaskTargetError(f"sample {self.rec.id} ({self.rec.source or self.rec.video}): {what}")

    def named(self) -> int:
        """0-based position of the sampled frame the record's ``frame`` (FrameK) names."""
        k = self.rec.frame
        if k is None:
            raise self.fail("the record has no frame (the 1-based FrameK its question asks about)")
        if k > len(self.indices):
            raise self.fail(f"its question is about Frame{k} but only {len(self.indices)} frames were sampled; "
                            f"sample at least {k} frames (data.sampler.num_frames) or drop the record")
        return k - 1

    def track_entry(self, key: str, position: int) -> Any:
        track = self.rec.track or {}
        entries = track.get(key)
        if entries is None:
            raise self.fail(f"the record has no track.{key}")
        index = self.indices[position]
        if index >= len(entries):
            raise self.fail(f"video frame {index} was sampled but track.{key} has only {len(entries)} entries "
                            "(one per video frame expected); the track does not match the video")
        return entries[index]

    def box_at_named(self) -> list[float]:
        pos = self.named()
        box = self.track_entry("boxes", pos)
        if box is None:
            raise self.fail(f"the object is not visible in Frame{pos + 1} (video frame {self.indices[pos]}): "
                            "track.boxes is null there")
        return box


def task_targets(
    record: Record,
    indices: Sequence[int],
    timestamps: Sequence[float],
    duration: float,
    frame_size: int | Sequence[int],
) -> dict[str, Any]:
    """The head targets of ``record`` for the sampled video frames ``indices`` (timestamps in seconds).

    ``{}`` for tasks without a head (chat, mcq, preference) unless the prompt has ``<region>`` boxes,
    which come back as ``input_boxes``. See the module docstring for each task's keys.
    """
    if len(indices) != len(timestamps):
        raise ValueError(f"task_targets: {len(indices)} indices but {len(timestamps)} timestamps")
    frames = _Frames(record, indices)
    out: dict[str, Any] = {}
    task = record.task
    if task == "temporal":
        if not record.spans:
            raise frames.fail("a temporal record needs spans")
        spans = torch.tensor(record.spans, dtype=torch.float32).reshape(-1, 2)
        if duration and duration > 0:
            spans = spans.clamp(0, float(duration))
        out["spans"] = spans
        out["saliency"] = saliency(record.spans, timestamps)
    elif task == "region":
        pos = frames.named()
        box = record.box if record.box is not None else frames.box_at_named()
        out["box"] = torch.tensor(box, dtype=torch.float32)
        out["frame"] = pos
    elif task == "mask":
        size = _size(frame_size)
        masks = torch.zeros((len(indices), *size), dtype=torch.bool)
        boxes = torch.zeros((len(indices), 4), dtype=torch.float32)
        visible = torch.zeros(len(indices), dtype=torch.bool)
        for t in range(len(indices)):
            box = frames.track_entry("boxes", t)
            rle = frames.track_entry("masks", t)
            if box is None or rle is None:
                continue
            masks[t] = torch.from_numpy(resize_nearest(rle_decode(rle), size))
            boxes[t] = torch.tensor(box, dtype=torch.float32)
            visible[t] = True
        out.update(masks=masks, boxes=boxes, visible=visible)

    n_regions = sum(turn.get("value", "").count(REGION_PLACEHOLDER) for turn in record.conversations
                    if turn.get("from") == "human")
    if n_regions:
        if record.input_boxes is not None:
            boxes_in = record.input_boxes
        elif n_regions == 1:
            boxes_in = [frames.box_at_named()]
        else:
            raise frames.fail(f"{n_regions} {REGION_PLACEHOLDER} placeholders but no input_boxes")
        if len(boxes_in) != n_regions:
            raise frames.fail(f"{len(boxes_in)} input_boxes for {n_regions} {REGION_PLACEHOLDER} placeholders")
        out["input_boxes"] = torch.tensor(boxes_in, dtype=torch.float32).reshape(-1, 4)
    return out
