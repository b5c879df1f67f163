"""Reading LLaVA-style JSONL annotations (schema: docs/data.md).

Every problem is reported as ``file:line: field: what is wrong`` and all problems of a file are
collected before raising, so a user fixes a corpus in one pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrc.config.schema import TASKS  # the ``task`` values the reader and the heads understand (docs/data.md)
from lrc.data.rle import check as rle_check
from lrc.errors import LrcError


class AnnotationError(LrcError, ValueError):
    """One or more malformed annotation records (the message lists every one)."""


@dataclass
class Record:
    id: str
    video: Path | None  # absolute; None for an image record (``images``)
    conversations: list[dict[str, str]]
    task: str = "chat"
    question_type: str | None = None
    options: list[str] | None = None
    answer: str | None = None
    duration: float | None = None
    source: str = ""  # "file:line", for messages
    extra: dict[str, Any] = field(default_factory=dict)
    # TPO task fields (docs/data.md); lrc.data.tasks.task_targets turns them into head targets
    spans: list[list[float]] | None = None  # temporal: [[start, end], ...] seconds
    frame: int | None = None  # region: 1-based "FrameK" of the prompt the question is about
    box: list[float] | None = None  # region: normalised [x1, y1, x2, y2] at that frame (instead of a track)
    track: dict[str, Any] | None = None  # {"boxes": [box | null per video frame], "masks": [RLE | null ...]}
    input_boxes: list[list[float]] | None = None  # one normalised box per <region> in the human turns
    rejected: str | None = None  # preference: the losing answer
    # an image record: its images in order (each a one-frame clip, one <image> placeholder each); video is None
    images: list[Path] | None = None
    start: float | None = None  # a segment of the video, in seconds: only [start, end) is sampled
    end: float | None = None
    fps: float | None = None  # as the record states it: the frame rate of a folder of frames

    @property
    def media(self) -> list[Path]:
        """The record's media files: its video, or its images."""
        return list(self.images) if self.images is not None else [self.video] if self.video is not None else []

    @property
    def media_label(self) -> str:
        """The media as one string, for messages and skip reports: the video path, or the image paths."""
        return ", ".join(str(p) for p in self.media)


_KNOWN = {"id", "video", "conversations", "task", "question_type", "options", "answer", "duration", "fps",
          "spans", "frame", "box", "track", "input_boxes", "rejected", "image", "images", "start", "end"}
VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"  # in an image record: one per image, in order
# tasks that need a video (time or per-video-frame tracks); an image record can have the others
VIDEO_TASKS = ("temporal", "mask")
REGION_PLACEHOLDER = "<region>"
# not in a video record: there an <image> would become a special token with no media behind it (an image
# record's <image> placeholders mark its images)
UNSUPPORTED_PLACEHOLDERS = ("<image>",)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _r(value: Any, limit: int = 80) -> str:
    """``repr`` for messages, shortened: a corrupt field can hold megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text)} chars)"


def box_problem(box: Any) -> str | None:
    """What is wrong with ``box`` as a normalised ``[x1, y1, x2, y2]`` box, or None."""
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_number(v) for v in box):
        return f"must be [x1, y1, x2, y2] (4 numbers), got {_r(box)}"
    x1, y1, x2, y2 = box
    if not all(0 <= v <= 1 for v in box):
        return f"must be normalised to [0, 1] (divide pixels by the frame width/height), got {list(box)}"
    if not (x1 < x2 and y1 < y2):
        return f"needs x1 < x2 and y1 < y2, got {list(box)}"
    return None


def _check_tpo(obj: dict[str, Any], bad: Any) -> None:
    """The TPO task fields: types, ranges, and what each task needs (docs/data.md)."""
    task = obj.get("task", "chat")
    duration = obj.get("duration") if _number(obj.get("duration")) else None
    spans = obj.get("spans")
    if spans is not None:
        if not isinstance(spans, list) or not spans:
            bad("spans", f"must be a non-empty list of [start, end] seconds, got {_r(spans)}")
        else:
            for i, span in enumerate(spans):
                if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_number(v) for v in span):
                    bad(f"spans[{i}]", f"must be [start, end] in seconds, got {_r(span)}")
                elif not 0 <= span[0] < span[1]:
                    bad(f"spans[{i}]", f"needs 0 <= start < end, got {list(span)}")
                elif duration is not None and span[1] > duration + 1e-6:
                    bad(f"spans[{i}]", f"ends at {span[1]} s, after the video's duration {duration} s")
    frame = obj.get("frame")
    if frame is not None and (not isinstance(frame, int) or isinstance(frame, bool) or frame < 1):
        bad("frame", f"must be the 1-based frame number K of the prompt's \"FrameK:\" (an int >= 1), got {_r(frame)}")
    if obj.get("box") is not None and (problem := box_problem(obj["box"])):
        bad("box", problem)
    track = obj.get("track")
    if track is not None:
        if not isinstance(track, dict) or not isinstance(track.get("boxes"), list):
            bad("track", 'must be {"boxes": [box or null per video frame], "masks": [RLE or null per video frame]}')
        else:
            boxes, masks = track["boxes"], track.get("masks")
            for i, box in enumerate(boxes):
                if box is not None and (problem := box_problem(box)):
                    bad(f"track.boxes[{i}]", problem)
                    break
            if masks is not None:
                if not isinstance(masks, list):
                    bad("track.masks", f"must be a list (one COCO RLE or null per video frame), got {type(masks).__name__}")
                elif len(masks) != len(boxes):
                    bad("track.masks", f"has {len(masks)} entries but track.boxes has {len(boxes)}; give one per video frame")
                else:
                    for i, (rle, box) in enumerate(zip(masks, boxes)):
                        if rle is None:
                            if box is not None:
                                bad(f"track.masks[{i}]", "is null (not visible) but track.boxes has a box there")
                                break
                            continue
                        problem = rle_check(rle)
                        if problem is None and box is None:
                            problem = "has a mask but track.boxes is null there"
                        if problem:
                            bad(f"track.masks[{i}]", problem)
                            break
    conv = obj.get("conversations") if isinstance(obj.get("conversations"), list) else []
    n_regions = sum(t["value"].count(REGION_PLACEHOLDER) for t in conv
                    if isinstance(t, dict) and t.get("from") == "human" and isinstance(t.get("value"), str))
    input_boxes = obj.get("input_boxes")
    if input_boxes is not None:
        if not isinstance(input_boxes, list):
            bad("input_boxes", f"must be a list of normalised boxes, got {type(input_boxes).__name__}")
        elif len(input_boxes) != n_regions:
            bad("input_boxes", f"has {len(input_boxes)} boxes but the human turns have {n_regions} "
                f"{REGION_PLACEHOLDER} placeholder(s); give one box per placeholder, in order")
        else:
            for i, box in enumerate(input_boxes):
                if problem := box_problem(box):
                    bad(f"input_boxes[{i}]", problem)
    elif n_regions:
        # without input_boxes, the one <region> is the track's box at the record's frame
        if n_regions > 1 or not isinstance(track, dict) or frame is None:
            bad("input_boxes", f"the human turns have {n_regions} {REGION_PLACEHOLDER} placeholder(s): give "
                "input_boxes (one normalised box each), or for a single placeholder a track and a frame")
    rejected = obj.get("rejected")
    if rejected is not None and (not isinstance(rejected, str) or not rejected.strip()):
        bad("rejected", f"must be a non-empty string (the losing answer), got {_r(rejected)}")
    if rejected is not None and task != "preference":
        bad("rejected", f'only preference records have a rejected answer; this record\'s task is {_r(task)}')
    if task == "preference" and rejected is None:
        bad("rejected", "a preference record needs the losing answer in rejected")
    if task == "temporal" and spans is None:
        bad("spans", "a temporal record needs spans: [[start, end], ...] in seconds")
    if task == "region":
        if frame is None:
            bad("frame", 'a region record needs the 1-based frame K its question asks about ("in FrameK")')
        if track is None and obj.get("box") is None:
            bad("track", "a region record needs a track (boxes per video frame) or a box at its frame")
    if task == "mask":
        if track is None:
            bad("track", "a mask record needs a track with boxes and masks per video frame")
        elif isinstance(track, dict) and track.get("masks") is None:
            bad("track.masks", "a mask record needs masks (COCO RLE or null per video frame)")


def _images(obj: dict[str, Any], bad: Any) -> list[str] | None:
    """An image record's image paths (``image``: one path, ``images``: a list), or None for a video record."""
    if obj.get("image") is None and obj.get("images") is None:
        return None
    if obj.get("image") is not None and obj.get("images") is not None:
        bad("images", "give `image` (one path) or `images` (a list), not both")
        return []
    if obj.get("video") is not None:
        bad("video", "a record holds one video or images, not both; split it into two records")
    value = obj["image"] if obj.get("image") is not None else obj["images"]
    name = "image" if obj.get("image") is not None else "images"
    paths = [value] if name == "image" else value
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        what = "a path string" if name == "image" else "a non-empty list of path strings"
        bad(name, f"must be {what}, got {_r(value)}")
        return []
    for i, p in enumerate(paths):
        if is_remote(p):
            bad(name if name == "image" else f"images[{i}]", f"{_r(p)} is a URL; lrc reads local files only "
                "(download the media and give its path)")
    return paths


def _check_image_record(obj: dict[str, Any], conv: Any, images: list[str], bad: Any) -> None:
    """An image record: one <image> per image over the human turns, in order; no <video>; a task that needs
    no video."""
    if not isinstance(conv, list) or not conv:
        bad("conversations", "missing or not a non-empty list")
        return
    human = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(turn.get("value"), str):
            bad(f"conversations[{i}]", 'must be {"from": "human"|"gpt", "value": "..."}')
            continue
        if VIDEO_PLACEHOLDER in turn["value"]:
            bad(f"conversations[{i}]", f"an image record has no video: remove the {VIDEO_PLACEHOLDER} (an "
                f"{IMAGE_PLACEHOLDER} marks each image)")
        if turn["from"] == "gpt" and IMAGE_PLACEHOLDER in turn["value"]:
            bad(f"conversations[{i}]", f"a gpt turn contains {IMAGE_PLACEHOLDER}; placeholders belong in human turns")
        if turn["from"] == "human":
            human.append(turn["value"])
    if not any(isinstance(t, dict) and t.get("from") == "gpt" for t in conv):
        bad("conversations", "has no gpt turn to learn from")
    n = sum(v.count(IMAGE_PLACEHOLDER) for v in human)
    if images and n != len(images):
        bad("conversations", f"the human turns have {n} {IMAGE_PLACEHOLDER} placeholder(s) for {len(images)} "
            f"image(s); put one {IMAGE_PLACEHOLDER} where each image goes, in the order of the images")
    task = obj.get("task", "chat")
    if task in VIDEO_TASKS:
        bad("task", f"a {task} record needs a video; an image record can be "
            f"{', '.join(t for t in TASKS if t not in VIDEO_TASKS)}")


def _check_segment(obj: dict[str, Any], image_record: bool, bad: Any) -> None:
    """``start`` / ``end``: a segment of the video in seconds, ``0 <= start < end``."""
    start, end = obj.get("start"), obj.get("end")
    if start is None and end is None:
        return
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not _number(value) or value < 0):
            bad(name, f"must be a number of seconds >= 0, got {_r(value)}")
    if _number(start) and _number(end) and start >= end:
        bad("end", f"must be after start ({start} s), got {end}")
    if image_record:
        bad("start" if start is not None else "end", "a segment (start/end) applies to a video; this record has images")
    if obj.get("spans") is not None:
        bad("spans", "a record with a segment (start/end) cannot have spans (they are in video seconds); trim the "
            "video, or drop start/end")


def _check(obj: Any, where: str, problems: list[str]) -> Record | None:
    def bad(field_name: str, what: str) -> None:
        problems.append(f"{where}: {field_name}: {what}")

    if not isinstance(obj, dict):
        bad("(record)", f"must be a JSON object, got {type(obj).__name__}")
        return None
    before = len(problems)
    rid = obj.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
        bad("id", f"missing or not a string (got {_r(rid)})")
    conv = obj.get("conversations")
    images = _images(obj, bad)  # None: a video record
    n_video = 0
    if images is not None:
        _check_image_record(obj, conv, images, bad)
    elif not isinstance(conv, list) or not conv:
        bad("conversations", "missing or not a non-empty list")
    else:
        # placeholders against media: exactly one <video> in the human turns, and a video path behind it
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt") or not isinstance(turn.get("value"), str):
                bad(f"conversations[{i}]", 'must be {"from": "human"|"gpt", "value": "..."}')
            elif turn["from"] == "gpt" and VIDEO_PLACEHOLDER in turn["value"]:
                bad(f"conversations[{i}]", f"a gpt turn contains {VIDEO_PLACEHOLDER}; the placeholder belongs in a human turn")
        if not any(isinstance(t, dict) and t.get("from") == "gpt" for t in conv):
            bad("conversations", "has no gpt turn to learn from")
        values = [t["value"] for t in conv if isinstance(t, dict) and isinstance(t.get("value"), str)]
        n_video = sum(v.count(VIDEO_PLACEHOLDER) for t, v in zip(conv, values)
                      if isinstance(t, dict) and t.get("from") == "human")
        if n_video == 0 and isinstance(obj.get("video"), str) and obj.get("video"):
            bad("conversations", f"the record has a video but no {VIDEO_PLACEHOLDER} placeholder in its human turns; "
                f"put one where the video goes (e.g. \"{VIDEO_PLACEHOLDER}\\nWhat happens?\")")
        elif n_video == 0:
            bad("conversations", f"no {VIDEO_PLACEHOLDER} placeholder in the human turns (exactly one is needed)")
        elif n_video > 1:
            bad("conversations", f"found {n_video} {VIDEO_PLACEHOLDER} placeholders; a record holds exactly one video")
        for tag in UNSUPPORTED_PLACEHOLDERS:
            if any(tag in v for v in values):
                bad("conversations", f"{tag} placeholders are not supported in a video record (its video is given "
                    f"by `video` and {VIDEO_PLACEHOLDER}; {tag} marks the images of an image record, given by "
                    f"`image`/`images`); remove the {tag}, or read a LLaVA file, where {tag} stands for the "
                    "video, with format llava")
    if images is None and (not isinstance(obj.get("video"), str) or not obj.get("video")):
        needs = f"; the conversation's {VIDEO_PLACEHOLDER} placeholder needs one" if n_video else ""
        bad("video", f"missing or not a path string (got {_r(obj.get('video'))}){needs}")
    elif images is None and is_remote(obj["video"]):
        bad("video", f"{_r(obj['video'])} is a URL; lrc reads local files only (download the video and give its path)")
    task = obj.get("task", "chat")
    if not isinstance(task, str):
        bad("task", f"must be a string, one of {', '.join(TASKS)}; got {_r(task)}")
    elif task not in TASKS:
        bad("task", f"unknown task {_r(task)}: use one of {', '.join(TASKS)} (docs/data.md)")
    for name in ("question_type", "answer"):
        if obj.get(name) is not None and not isinstance(obj.get(name), str):
            bad(name, f"must be a string, got {_r(obj.get(name))}")
    options, answer = obj.get("options"), obj.get("answer")
    if task == "mcq":
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o for o in options):
            bad("options", f"an mcq record needs a list of at least two option letters, got {_r(options)}")
        elif answer not in options:
            bad("answer", f"{_r(answer)} is not one of the options {_r(options)}")
    elif options is not None and (not isinstance(options, list) or not all(isinstance(o, str) for o in options)):
        bad("options", f"must be a list of option strings, got {_r(options)}")
    duration = obj.get("duration")
    if duration is not None and (not _number(duration) or duration <= 0):
        bad("duration", f"must be a positive number of seconds, got {_r(duration)}")
    fps = obj.get("fps")
    if fps is not None and (not _number(fps) or fps <= 0):
        bad("fps", f"must be a positive number of frames per second, got {_r(fps)}")
    _check_segment(obj, images is not None, bad)
    _check_tpo(obj, bad)
    if len(problems) > before:
        return None
    return Record(
        id=str(obj["id"]), video=None if images is not None else Path(obj["video"]), conversations=conv, task=task,
        question_type=obj.get("question_type"), options=options, answer=answer, duration=duration,
        extra={k: v for k, v in obj.items() if k not in _KNOWN},
        spans=obj.get("spans"), frame=obj.get("frame"), box=obj.get("box"), track=obj.get("track"),
        input_boxes=obj.get("input_boxes"), rejected=obj.get("rejected"),
        images=[Path(p) for p in images] if images is not None else None, start=obj.get("start"),
        end=obj.get("end"), fps=fps,
    )


def check_record(obj: Any, where: str, problems: list[str]) -> Record | None:
    """One annotation object in lrc's schema as a Record (media paths as written), or None after appending
    every problem to ``problems`` as ``where: field: what is wrong``. The readers of every annotation format
    (lrc/data/formats/) end here, so all formats are held to the same schema."""
    return _check(obj, where, problems)


def parse_json(text: str) -> tuple[Any, str | None]:
    """Strict JSON (no NaN/Infinity, no overflowing numbers, no duplicate keys): ``(value, None)`` or
    ``(None, what is wrong)``."""
    return _parse_line(text)


def strict_decoder() -> json.JSONDecoder:
    """A decoder as strict as :func:`parse_json`, for reading a JSON array item by item (``raw_decode``);
    its errors are ``ValueError`` (:func:`parse_json` words them)."""
    return json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys)


def is_remote(path: str) -> bool:
    """A URL (``http://``, ``s3://`` ...): lrc reads local files only."""
    return "://" in path


def resolve_media(rec: Record, root: Path) -> None:
    """Make ``rec``'s media paths absolute: a relative path resolves against ``root``."""
    if rec.video is not None and not rec.video.is_absolute():
        rec.video = root / rec.video
    if rec.images is not None:
        rec.images = [p if p.is_absolute() else root / p for p in rec.images]


class _LineProblem(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _LineProblem(f"{name} is not valid JSON; write null or a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _LineProblem(f"number {text[:40]} is out of range for a float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _LineProblem(f"key {_r(k)} appears twice in one object")
        out[k] = v
    return out


def _parse_line(line: str) -> tuple[Any, str | None]:
    """Strict JSON of one line: (value, None), or (None, what is wrong)."""
    try:
        return json.loads(line, parse_constant=_no_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys), None
    except _LineProblem as exc:
        return None, str(exc)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        return None, f"not valid JSON ({str(exc).split(';')[0][:120]})"


def load_annotations(path: Path | str, media_root: Path | str | None = None) -> list[Record]:
    """Parse a JSONL file; relative video paths resolve against ``media_root`` (default: its folder)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    root = Path(media_root) if media_root is not None else path.parent
    records: list[Record] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    # bytes, decoded line by line: one bad byte is a problem of its line, not a crash of the file
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{where}: (line): not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                f"{exc.start + 1}); save the file as UTF-8")
                continue
            if line_no == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if not line.strip():
                continue
            obj, problem = _parse_line(line)
            if problem:
                problems.append(f"{where}: (line): {problem}")
                continue
            rec = _check(obj, where, problems)
            if rec is None:
                continue
            if rec.id in seen:
                problems.append(f"{where}: id: {_r(rec.id)} already used at {seen[rec.id]}")
                continue
            seen[rec.id] = where
            rec.source = where
            resolve_media(rec, root)
            records.append(rec)
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise AnnotationError(f"{len(problems)} problem(s) in {path}:\n  {shown}{more}\n"
                              "Fix these records (schema: docs/data.md) and run again.")
    if not records:
        raise AnnotationError(f"{path} has no records")
    return records
