"""lrc's own format: JSON lines in the schema of docs/data.md (read by lrc.data.annotations.load_annotations).

    {"id": "v1-colour", "video": "videos/v1.mp4", "conversations": [
        {"from": "human", "value": "<video>\\nWhat colour is the circle?"}, {"from": "gpt", "value": "red"}]}
    {"id": "i1", "image": "images/i1.png", "conversations": [
        {"from": "human", "value": "<image>\\nWhat colour is the circle?"}, {"from": "gpt", "value": "red"}]}
"""

from __future__ import annotations

from typing import Any

from lrc.data.annotations import Record
from lrc.data.formats.common import Bad

NAME = "lrc"
CONTAINERS = ("jsonl",)
DESCRIPTION = "JSON lines; `conversations` of {from: human|gpt, value}; `video` with one <video>, or `image`/`images` with one <image> each"


def to_lrc(obj: Any, where: str, bad: Bad) -> Any:
    """lrc's schema is the common one: nothing to rewrite."""
    return obj


def record_dict(rec: Record, media: list[str]) -> dict[str, Any]:
    """A record as an lrc JSON object; ``media`` are its paths as they should be written."""
    out: dict[str, Any] = {"id": rec.id}
    if rec.images is not None:
        if len(media) == 1:
            out["image"] = media[0]
        else:
            out["images"] = media
    else:
        out["video"] = media[0]
    for name in ("start", "end", "duration", "fps"):
        if getattr(rec, name) is not None:
            out[name] = getattr(rec, name)
    if rec.task != "chat":
        out["task"] = rec.task
    out["conversations"] = [dict(t) for t in rec.conversations]
    for name in ("question_type", "options", "answer", "spans", "frame", "box", "track", "input_boxes", "rejected"):
        if getattr(rec, name) is not None:
            out[name] = getattr(rec, name)
    out.update(rec.extra)
    return out


def from_record(rec: Record, media: list[str]) -> dict[str, Any]:
    return record_dict(rec, media)
