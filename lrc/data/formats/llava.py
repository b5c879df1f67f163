"""LLaVA's format (LLaVA-1.5, LLaVA-OneVision, LLaVA-Video-178K): a JSON array (or JSON lines) of

    {"id": "v_abc", "video": "academic/v_abc.mp4", "data_source": "...",
     "conversations": [{"from": "human", "value": "<image>\\nWhat happens?"}, {"from": "gpt", "value": "..."}]}
    {"id": "000001", "image": "coco/000001.jpg", "conversations": [...]}
    {"id": "pair-3", "image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image>\\n<image>\\nWhat changed?"}, {"from": "gpt", "value": "..."}]}

LLaVA's loaders use ``<image>`` as the visual placeholder of video records too; this reader turns the one
placeholder of a video record (``<image>`` or ``<video>``) into lrc's ``<video>``. A record whose text has
no placeholder gets one per medium at the start of its first human turn. Paths are relative to the
source's ``root`` (LLaVA's ``image_folder`` / ``video_folder``). Records without ``id`` are named
``{file stem}-{index}``; repeated ids get ``#2``, ``#3`` ... (LLaVA files repeat ids across questions of
one video). Every other key is kept on the record (``data_source`` ...), lrc's task keys included.
"""

from __future__ import annotations

from typing import Any

from lrc.data.annotations import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Record
from lrc.data.formats.common import Bad, as_list, count_tags, prepend_tags
from lrc.data.formats.lrc import record_dict

NAME = "llava"
CONTAINERS = ("json", "jsonl")
DESCRIPTION = "`conversations` of {from: human|gpt, value}; `video` or `image` (a path or a list); <image> or <video> placeholders"


def to_lrc(obj: Any, where: str, bad: Bad) -> Any:
    if not isinstance(obj, dict):
        return obj
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        return obj  # the schema check says what is wrong
    out = {k: v for k, v in obj.items() if k not in ("image", "video")}
    video, image = obj.get("video"), obj.get("image")
    if video is not None and image is not None:
        bad("image", "a record holds one video or images, not both; split it into two records")
        return None
    if video is not None:
        n = count_tags(turns, (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER))
        if n == 0:
            turns = prepend_tags(turns, VIDEO_PLACEHOLDER, 1)
        elif n == 1:
            turns = [{**t, "value": t["value"].replace(IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)}
                     if isinstance(t, dict) and t.get("from") == "human" and isinstance(t.get("value"), str) else t
                     for t in turns]
        else:
            bad("conversations", f"the human turns have {n} {IMAGE_PLACEHOLDER}/{VIDEO_PLACEHOLDER} placeholders for "
                "one video; a video record has exactly one")
            return None
        out["video"] = video
    elif image is not None:
        images = as_list(image)
        if isinstance(images, list) and count_tags(turns, (IMAGE_PLACEHOLDER,)) == 0:
            turns = prepend_tags(turns, IMAGE_PLACEHOLDER, len(images))
        out["images"] = images
    else:
        bad("video", "a record needs a `video` or an `image`; text-only records are not supported (lrc trains on "
            "video and images)")
        return None
    out["conversations"] = turns
    return out


def from_record(rec: Record, media: list[str]) -> dict[str, Any]:
    """A record in LLaVA's shape: ``video`` or ``image`` (a path, or a list for several), ``<image>`` as the
    placeholder of videos too (as LLaVA-Video-178K writes it)."""
    out = record_dict(rec, media)
    if rec.images is not None:
        out.pop("image", None)
        out.pop("images", None)
        image: Any = media[0] if len(media) == 1 else media
        out = {"id": out.pop("id"), "image": image, **out}
    else:
        out["conversations"] = [{**t, "value": t["value"].replace(VIDEO_PLACEHOLDER, IMAGE_PLACEHOLDER)}
                                for t in out["conversations"]]
    return out
