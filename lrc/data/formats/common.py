"""What the annotation formats share: reading a file's items (JSON lines or one JSON array) with the place of
each, and the small rewrites every reader needs (placeholders, media lists)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from lrc.data.annotations import AnnotationError, parse_json, strict_decoder

Bad = Callable[[str, str], None]  # bad(field, what is wrong)


@dataclass
class Item:
    """One record of a file as parsed: ``obj``, or ``problem`` when its JSON is bad. ``where`` is
    ``file:line`` (JSON lines) or ``file:line [item i]`` (a JSON array); ``index`` counts records from 0."""

    where: str
    index: int
    obj: Any = None
    problem: str | None = None


def container_of(path: Path) -> str:
    """``"json"`` when the file is one JSON array (its first character, after whitespace, is ``[``), else
    ``"jsonl"`` (one JSON value per line)."""
    with path.open("rb") as fh:
        head = fh.read(4096).decode("utf-8", errors="replace").removeprefix("\ufeff").lstrip()
    return "json" if head.startswith("[") else "jsonl"


def iter_items(path: Path, limit: int | None = None) -> Iterator[Item]:
    """The file's records in order (at most ``limit``). A JSON-lines file yields one item per non-blank line,
    each with its own problem when its bytes or JSON are bad; a JSON array yields its elements, and a syntax
    error in the array is an :class:`AnnotationError` for the whole file (nothing after it can be read)."""
    if container_of(path) == "json":
        yield from _array_items(path, limit)
    else:
        yield from _line_items(path, limit)


def _line_items(path: Path, limit: int | None) -> Iterator[Item]:
    index = 0
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if limit is not None and index >= limit:
                return
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Item(where, index, problem=f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                                 f"{exc.start + 1}); save the file as UTF-8")
                index += 1
                continue
            if line_no == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            obj, problem = parse_json(line)
            yield Item(where, index, obj=obj, problem=problem)
            index += 1


def _array_items(path: Path, limit: int | None) -> Iterator[Item]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise AnnotationError(f"{path}:{line}: (file): not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file "
                              "as UTF-8") from None
    decoder = strict_decoder()
    pos = _skip_space(text, text.index("[") + 1)
    index = 0
    while pos < len(text) and text[pos] != "]":
        if limit is not None and index >= limit:
            return
        line = text.count("\n", 0, pos) + 1
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f"{path}:{exc.lineno}: (file): not valid JSON ({exc.msg} at column {exc.colno}) in "
                                  f"item {index} of the array; fix it and run again") from None
        except (ValueError, RecursionError) as exc:  # the strict decoder's own refusals: NaN, duplicate keys ...
            what = str(exc).split(";")[0][:200] if not isinstance(exc, RecursionError) else "nested too deeply"
            raise AnnotationError(f"{path}:{line}: (file): item {index} of the array: {what}") from None
        yield Item(f"{path}:{line} [item {index}]", index, obj=obj)
        index += 1
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_space(text, pos + 1)
        elif pos >= len(text) or text[pos] != "]":
            line = text.count("\n", 0, pos) + 1
            raise AnnotationError(f"{path}:{line}: (file): not valid JSON (expected ',' or ']' after item "
                                  f"{index - 1} of the array)")
    if pos >= len(text):
        raise AnnotationError(f"{path}: (file): not valid JSON (the array is not closed with ']'; is the file "
                              "truncated?)")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def as_list(value: Any) -> Any:
    """A single path string as a one-item list; anything else unchanged (the schema check judges it)."""
    return [value] if isinstance(value, str) else value


def count_tags(turns: list[dict[str, Any]], tags: tuple[str, ...], role: str = "human") -> int:
    return sum(t["value"].count(tag) for t in turns if isinstance(t, dict) and t.get("from") == role
               and isinstance(t.get("value"), str) for tag in tags)


def prepend_tags(turns: list[dict[str, Any]], tag: str, n: int) -> list[dict[str, Any]]:
    """``n`` placeholders at the start of the first human turn, one per line (what LLaVA-style loaders do
    for a record whose text names no placeholder)."""
    out = [dict(t) if isinstance(t, dict) else t for t in turns]
    for turn in out:
        if isinstance(turn, dict) and turn.get("from") == "human" and isinstance(turn.get("value"), str):
            turn["value"] = f"{tag}\n" * n + turn["value"]
            break
    return out
