"""ShareGPT / messages format, as ms-swift and LLaMA-Factory read multimodal data: JSON lines (or an array) of

    {"messages": [{"role": "system", "content": "You are ..."},
                  {"role": "user", "content": "<video>What happens?"},
                  {"role": "assistant", "content": "..."}],
     "videos": ["clips/a.mp4"]}
    {"messages": [{"role": "user", "content": "<image><image>What differs?"}, {"role": "assistant", "content": "..."}],
     "images": ["a.jpg", "b.jpg"]}

Turns may also be LLaMA-Factory's default ``conversations`` of ``{from: human|gpt, value}``. Roles: ``user``
(``human``), ``assistant`` (``gpt``) and one leading ``system`` message, which is kept on the record
(``extra["system"]``) but not put into lrc's prompt. A record holds one video or several images, each
matched to a ``<video>`` / ``<image>`` placeholder in order; a record whose text has none gets them at the
start of its first user turn (as both tools do). Preference pairs: ms-swift's ``rejected_response``, or
LLaMA-Factory's ``chosen``/``rejected`` messages, become a ``preference`` record. Records without ``id``
are named ``{file stem}-{index}``; repeated ids get ``#2``, ``#3`` ... Other keys are kept.
"""

from __future__ import annotations

from typing import Any

from lrc.data.annotations import IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, Record
from lrc.data.formats.common import Bad, as_list, count_tags, prepend_tags
from lrc.data.formats.lrc import record_dict

NAME = "sharegpt"
CONTAINERS = ("jsonl", "json")
DESCRIPTION = "`messages` of {role: user|assistant|system, content}; `videos` / `images` lists; <video> / <image> placeholders"
ROLES = {"user": "human", "human": "human", "assistant": "gpt", "gpt": "gpt"}
_OWN = ("messages", "conversations", "images", "videos", "rejected_response", "chosen", "system")


def _text(message: Any) -> Any:
    return message.get("content", message.get("value")) if isinstance(message, dict) else None


def to_lrc(obj: Any, where: str, bad: Bad) -> Any:
    if not isinstance(obj, dict):
        return obj
    key = "messages" if "messages" in obj else "conversations"
    messages = obj.get(key)
    if not isinstance(messages, list) or not messages:
        bad("messages", f"missing or not a non-empty list of {{role, content}} messages (got {type(messages).__name__})")
        return None
    out = {k: v for k, v in obj.items() if k not in _OWN}
    turns: list[dict[str, Any]] = []
    system = obj.get("system")
    for i, message in enumerate(messages):
        role = message.get("role", message.get("from")) if isinstance(message, dict) else None
        content = _text(message)
        if role == "system":
            if i != 0:
                bad(f"{key}[{i}]", "a system message must come first")
            elif not isinstance(content, str):
                bad(f"{key}[{i}]", "content must be a string")
            else:
                system = content
            continue
        if not isinstance(role, str) or role not in ROLES:
            bad(f"{key}[{i}]", f"role {role!r} is not supported: use user and assistant (and one leading system "
                "message); tool and function messages are not")
            continue
        if not isinstance(content, str):
            bad(f"{key}[{i}]", "content must be a string (lists of content parts are not supported: write the text "
                "with <image>/<video> placeholders)")
            continue
        turns.append({"from": ROLES[role], "value": content})
    # preference pairs: ms-swift's rejected_response, LLaMA-Factory's chosen/rejected messages
    if obj.get("rejected_response") is not None:
        out["rejected"] = obj["rejected_response"]
        out.setdefault("task", "preference")
    if isinstance(obj.get("chosen"), dict) or isinstance(obj.get("rejected"), dict):
        chosen, rejected = _text(obj.get("chosen")), _text(obj.get("rejected"))
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            bad("chosen", "a preference pair needs chosen and rejected messages with string content")
            return None
        turns.append({"from": "gpt", "value": chosen})
        out["rejected"] = rejected
        out.setdefault("task", "preference")
    if system is not None:
        out["system"] = system
    images, videos = as_list(obj.get("images")), as_list(obj.get("videos"))
    if images and videos:
        bad("videos", "a record holds one video or images, not both; split it into two records")
        return None
    if videos:
        if not isinstance(videos, list) or len(videos) != 1:
            bad("videos", f"a record holds exactly one video, got {videos!r:.80}")
            return None
        if count_tags(turns, (VIDEO_PLACEHOLDER,)) == 0:
            turns = prepend_tags(turns, VIDEO_PLACEHOLDER, 1)
        out["video"] = videos[0]
    elif images:
        if isinstance(images, list) and count_tags(turns, (IMAGE_PLACEHOLDER,)) == 0:
            turns = prepend_tags(turns, IMAGE_PLACEHOLDER, len(images))
        out["images"] = images
    else:
        bad("videos", "a record needs `videos` (one) or `images`; text-only records are not supported (lrc trains on "
            "video and images)")
        return None
    out["conversations"] = turns
    return out


def from_record(rec: Record, media: list[str]) -> dict[str, Any]:
    """A record as ms-swift / LLaMA-Factory read it: ``messages`` with ``role``/``content``, ``videos`` or
    ``images``, ``rejected_response`` for a preference pair; lrc's task keys kept."""
    base = record_dict(rec, media)
    messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]}
                for t in base.pop("conversations")]
    if isinstance(rec.extra.get("system"), str):
        messages.insert(0, {"role": "system", "content": base.pop("system")})
    out: dict[str, Any] = {"id": base.pop("id"), "messages": messages}
    for name in ("video", "image", "images"):
        base.pop(name, None)
    if rec.images is not None:
        out["images"] = media
    else:
        out["videos"] = media
    if rec.rejected is not None:
        out["rejected_response"] = base.pop("rejected")
    out.update(base)
    return out
