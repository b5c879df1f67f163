"""Annotation formats: lrc's JSON lines, LLaVA's JSON, ShareGPT messages — read into lrc's Record, written back.

    loaded = read_annotations("llava_video_178k.json", root="videos/")   # format detected
    loaded.format, loaded.reason, loaded.records
    convert("train.json", "train.jsonl", to="sharegpt")                  # no media copied

Each format is a module with ``to_lrc`` (one parsed object → an object in lrc's schema) and ``from_record``
(a Record → an object of the format); every format ends in the same schema check
(``lrc.data.annotations.check_record``), so a record means the same whatever file it came from, and
every problem is reported as ``file:line: field: what is wrong`` (``file:line [item i]`` in a JSON array).

Detection (``format="auto"``) reads the first :data:`DETECT_RECORDS` records and takes the first of lrc,
llava, sharegpt under which all of them are valid (lrc only for JSON lines). When none fits them all (a
file with bad records), the keys decide: ``messages`` (or ``videos``) is sharegpt, another
JSON array is llava, other JSON lines are lrc; the file's problems are then reported in that format. It
logs, and returns, which format it chose and why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lrc.config.schema import ANNOTATION_FORMATS, SOURCE_FORMATS
from lrc.data.annotations import AnnotationError, Record, check_record, load_annotations, resolve_media
from lrc.data.formats import llava, lrc, sharegpt
from lrc.data.formats.common import Item, container_of, iter_items

log = logging.getLogger(__name__)

FORMATS = {"lrc": lrc, "llava": llava, "sharegpt": sharegpt}
assert tuple(FORMATS) == ANNOTATION_FORMATS
DETECT_RECORDS = 20
MAX_SHOWN = 50  # problems listed in one error


@dataclass
class Annotations:
    """The records of one file, the format they were read as and why that format."""

    path: Path
    format: str
    reason: str
    records: list[Record]


def _convert(module: Any, item: Item, problems: list[str]) -> Record | None:
    def bad(field: str, what: str) -> None:
        problems.append(f"{item.where}: {field}: {what}")

    if item.problem is not None:
        problems.append(f"{item.where}: (line): {item.problem}")
        return None
    obj = module.to_lrc(item.obj, item.where, bad)
    if obj is None:
        return None
    return check_record(obj, item.where, problems)


def detect_format(path: str | os.PathLike) -> tuple[str, str]:
    """``(format, why)`` for an annotation file, from its first records (see the module docstring)."""
    path = Path(path)
    container = container_of(path)
    items = list(iter_items(path, limit=DETECT_RECORDS))
    if not items:
        raise AnnotationError(f"{path} has no records")
    kind = "a JSON array" if container == "json" else "JSON lines"
    first_problem: dict[str, str] = {}
    fits: dict[str, int] = {}
    for name, module in FORMATS.items():
        if container not in module.CONTAINERS:
            first_problem[name] = f"{name} files are JSON lines, not a JSON array"
            continue
        fits[name] = 0
        seen: dict[str, int] = {}
        for item in items:
            problems: list[str] = []
            if name != "lrc" and isinstance(item.obj, dict):
                item = Item(item.where, item.index, _named(item.obj, path, item.index, seen), item.problem)
            if _convert(module, item, problems) is not None:
                fits[name] += 1
            elif name not in first_problem:
                first_problem[name] = problems[0] if problems else "does not fit"
    n = len(items)
    for name, count in fits.items():
        if count == n:
            passed = "; ".join(f"not {other}: {why}" for other, why in first_problem.items()
                               if list(FORMATS).index(other) < list(FORMATS).index(name))
            return name, f"{kind}; all of the first {n} records fit {name}" + (f" ({passed})" if passed else "")
    # no format fits them all: the keys decide, and the file's problems are reported in that format
    objs = [item.obj for item in items if isinstance(item.obj, dict)]
    if any("messages" in o or "videos" in o for o in objs):
        name, keys = "sharegpt", "`messages` or `videos`"
    elif container == "json":
        name, keys = "llava", "a JSON array of records"
    else:
        name, keys = "lrc", "JSON lines without `messages`"
    return name, (f"{kind}; not all of the first {n} records fit any format, so the keys decide: {keys} -> {name} "
                  f"(as {name}: {first_problem.get(name, '?')})")


def read_annotations(path: str | os.PathLike, format: str = "auto", root: str | os.PathLike | None = None) -> Annotations:
    """Every record of an annotation file, as lrc Records with absolute media paths (relative paths resolve
    against ``root``, by default the file's folder). ``format``: one of ``auto``, ``lrc``, ``llava``,
    ``sharegpt``. All problems of the file are raised together as one :class:`AnnotationError`."""
    path = Path(path)
    if format not in SOURCE_FORMATS:
        raise AnnotationError(f"{path}: unknown annotation format {format!r}; use one of {', '.join(SOURCE_FORMATS)}")
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    if format == "auto":
        format, reason = detect_format(path)
        log.info("%s: read as %s (%s)", path, format, reason)
    else:
        reason = "named in the config"
    media_root = Path(root) if root is not None else path.parent
    if format == "lrc":
        if container_of(path) == "json":
            raise AnnotationError(f"{path}: a JSON array, but the lrc format is JSON lines (one record per line); "
                                  "read it as llava or sharegpt (or auto), or convert it with `lrc data convert`")
        return Annotations(path, format, reason, load_annotations(path, media_root))
    module = FORMATS[format]
    records: list[Record] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for item in iter_items(path):
        if isinstance(item.obj, dict):
            item.obj = _named(item.obj, path, item.index, seen)
        rec = _convert(module, item, problems)
        if rec is None:
            continue
        rec.source = item.where
        resolve_media(rec, media_root)
        records.append(rec)
    if problems:
        shown = "\n  ".join(problems[:MAX_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise AnnotationError(f"{len(problems)} problem(s) in {path} (read as {format}: {reason}):\n  {shown}{more}\n"
                              f"Fix these records ({format} format: docs/data.md) and run again.")
    if not records:
        raise AnnotationError(f"{path} has no records")
    return Annotations(path, format, reason, records)


def _named(obj: dict[str, Any], path: Path, index: int, seen: dict[str, int]) -> dict[str, Any]:
    """LLaVA and ShareGPT files often lack ids or repeat them: ``{stem}-{index}`` for a missing id, ``id#k`` for
    the k-th use of one (lrc needs one id per record for its logs and skip reports)."""
    rid = obj.get("id")
    if rid is None:
        rid = f"{path.stem}-{index}"
    elif not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
        return obj  # the schema check reports it
    rid = str(rid)
    seen[rid] = seen.get(rid, 0) + 1
    if seen[rid] > 1:
        rid = f"{rid}#{seen[rid]}"
    return {**obj, "id": rid}


def _written(path: Path, folder: Path) -> str:
    """A media path as an annotation file in ``folder`` should hold it: relative when the media lies under the
    folder (it resolves against the file's folder by default), else absolute."""
    path = Path(os.path.abspath(path))
    folder = Path(os.path.abspath(folder))
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def write_annotations(records: Sequence[Record], out: str | os.PathLike, format: str,
                      container: str | None = None) -> Path:
    """Write ``records`` as an annotation file of ``format`` (``container``: ``json`` for one array, ``jsonl``
    for lines; by default from the file name, ``.json`` → array). Media paths are written relative to the
    file's folder when they lie under it, else absolute. Written to a temporary file and renamed."""
    out = Path(out)
    if format not in FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r}; use one of {', '.join(FORMATS)}")
    module = FORMATS[format]
    container = container or ("json" if out.suffix.lower() == ".json" else "jsonl")
    if container not in module.CONTAINERS:
        raise AnnotationError(f"{out}: the {format} format is written as JSON lines; name the file .jsonl")
    rows = [module.from_record(rec, [_written(p, out.parent) for p in rec.media]) for rec in records]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        if container == "json":
            fh.write("[\n" + ",\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n]\n")
        else:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out


def convert(src: str | os.PathLike, out: str | os.PathLike, to: str, from_format: str = "auto",
            root: str | os.PathLike | None = None, force: bool = False) -> dict[str, Any]:
    """``lrc data convert``: read ``src`` (any format), write ``out`` in format ``to``; media are not copied, their
    paths are rewritten to resolve from ``out``'s folder. Returns ``{records, from, to, out}``."""
    src, out = Path(src), Path(out)
    if to not in FORMATS:
        raise AnnotationError(f"--to {to!r}: use one of {', '.join(FORMATS)}")
    if out.exists() and os.path.abspath(out) == os.path.abspath(src):
        raise AnnotationError(f"{out} is the input file; write the converted records to another file")
    if out.exists() and not force:
        raise AnnotationError(f"{out} already exists; pass --force to overwrite it")
    loaded = read_annotations(src, from_format, root)
    write_annotations(loaded.records, out, to)
    return {"records": len(loaded.records), "from": loaded.format, "from_reason": loaded.reason, "to": to,
            "out": str(out)}


__all__ = ["FORMATS", "Annotations", "convert", "detect_format", "read_annotations", "write_annotations"]
