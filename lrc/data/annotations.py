"""Reading LLaVA-style JSONL annotations (schema: docs/data.md).

Every problem is reported as ``file:line: field: what is wrong`` and all problems of a file are
collected before raising, so a user fixes a corpus in one pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class AnnotationError(ValueError):
    """One or more malformed annotation records (the message lists every one)."""


@dataclass
class Record:
    id: str
    video: Path  # absolute
    conversations: list[dict[str, str]]
    task: str = "chat"
    question_type: str | None = None
    options: list[str] | None = None
    answer: str | None = None
    duration: float | None = None
    source: str = ""  # "file:line", for messages
    extra: dict[str, Any] = field(default_factory=dict)


_KNOWN = {"id", "video", "conversations", "task", "question_type", "options", "answer", "duration", "fps"}


def _check(obj: Any, where: str, problems: list[str]) -> Record | None:
    def bad(field_name: str, what: str) -> None:
        problems.append(f"{where}: {field_name}: {what}")

    if not isinstance(obj, dict):
        bad("(record)", f"must be a JSON object, got {type(obj).__name__}")
        return None
    before = len(problems)
    if not isinstance(obj.get("id"), (str, int)):
        bad("id", "missing or not a string")
    if not isinstance(obj.get("video"), str) or not obj.get("video"):
        bad("video", "missing or not a path string")
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not conv:
        bad("conversations", "missing or not a non-empty list")
    else:
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(turn.get("value"), str):
                bad(f"conversations[{i}]", 'must be {"from": "human"|"gpt", "value": "..."}')
        if not any(isinstance(t, dict) and t.get("from") == "gpt" for t in conv):
            bad("conversations", "has no gpt turn to learn from")
        n_video = sum(t.get("value", "").count("<video>") for t in conv if isinstance(t, dict) and isinstance(t.get("value"), str))
        if n_video != 1:
            bad("conversations", f"must contain exactly one <video> placeholder, found {n_video}")
    options, answer = obj.get("options"), obj.get("answer")
    if obj.get("task") == "mcq":
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o for o in options):
            bad("options", "an mcq record needs a list of at least two option letters")
        elif answer not in options:
            bad("answer", f"{answer!r} is not one of the options {options}")
    duration = obj.get("duration")
    if duration is not None and (not isinstance(duration, (int, float)) or duration <= 0):
        bad("duration", f"must be a positive number of seconds, got {duration!r}")
    if len(problems) > before:
        return None
    return Record(
        id=str(obj["id"]), video=Path(obj["video"]), conversations=conv, task=obj.get("task", "chat"),
        question_type=obj.get("question_type"), options=options, answer=answer, duration=duration,
        extra={k: v for k, v in obj.items() if k not in _KNOWN},
    )


def load_annotations(path: Path | str, media_root: Path | str | None = None) -> list[Record]:
    """Parse a JSONL file; relative video paths resolve against ``media_root`` (default: its folder)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    root = Path(media_root) if media_root is not None else path.parent
    records: list[Record] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: (line): not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            rec = _check(obj, where, problems)
            if rec is None:
                continue
            if rec.id in seen:
                problems.append(f"{where}: id: {rec.id!r} already used at {seen[rec.id]}")
                continue
            seen[rec.id] = where
            rec.source = where
            rec.video = rec.video if rec.video.is_absolute() else root / rec.video
            records.append(rec)
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise AnnotationError(f"{len(problems)} problem(s) in {path}:\n  {shown}{more}\n"
                              "Fix these records (schema: docs/data.md) and run again.")
    if not records:
        raise AnnotationError(f"{path} has no records")
    return records
