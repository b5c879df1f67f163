"""What every benchmark reader produces: :class:`Item`, one question about one video, in lrc's terms.

A reader (lrc/evaluation/<benchmark>.py) turns the benchmark's own annotation files and folder layout into
items; the runner samples each item's video, asks the benchmark's prompt and scores the answer the same way
for all of them. Shared here: the item, reading annotation files (JSON, JSON lines, Parquet), and the error
that says which file and which record is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from lrc.errors import LrcError


class BenchmarkDataError(LrcError, ValueError):
    """A benchmark folder or annotation file that cannot be read as that benchmark (the message names the file,
    the record and what the benchmark's layout expects)."""


@dataclass
class Item:
    id: str  # unique within the benchmark
    video: Path  # a video file or a folder of frames
    question: str  # the benchmark's question text (without the options)
    category: str  # the main category the benchmark reports (MVBench's task, MLVU's task type ...)
    options: list[str] = field(default_factory=list)  # option texts, in letter order (multiple choice)
    answer: str | None = None  # the right option's letter (multiple choice)
    span: tuple[float, float] | None = None  # the right segment, seconds (grounding)
    groups: dict[str, str] = field(default_factory=dict)  # further breakdowns: {"duration": "short", ...}
    start: float | None = None  # a segment of the video the question is about (MVBench's bound), seconds
    end: float | None = None
    fps: float | None = None  # frame rate of a frame folder
    subtitles: Path | None = None  # a subtitle file (Video-MME)
    extra: dict[str, Any] = field(default_factory=dict)  # fields the prompt needs (Video-MME's lettered options)

    def describe(self) -> dict[str, Any]:
        """The item as results.json records it beside the prediction."""
        out: dict[str, Any] = {"id": self.id, "category": self.category, "video": str(self.video),
                               "question": self.question}
        if self.groups:
            out["groups"] = dict(self.groups)
        if self.options:
            out.update(options=list(self.options), answer=self.answer)
        if self.span is not None:
            out["span"] = [round(self.span[0], 3), round(self.span[1], 3)]
        if self.start is not None or self.end is not None:
            out["segment"] = [self.start, self.end]
        return out


def letter_of(options: list[str], answer: str, where: str) -> str:
    """The letter of ``answer`` among ``options`` (the benchmarks that give the answer as its text)."""
    from lrc.evaluation.answers import LETTERS

    if answer in options:
        return LETTERS[options.index(answer)]
    raise BenchmarkDataError(f"{where}: the answer {answer!r} is not one of its candidates {options}")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The records of an annotation file: a JSON array (or an object holding one list), JSON lines, or Parquet
    (the Hugging Face copies of the benchmarks; needs pyarrow, which ``lrc-video[eval]`` installs)."""
    if not path.is_file():
        raise BenchmarkDataError(f"{path} does not exist")
    if path.suffix == ".parquet":
        from lrc.errors import require

        parquet = require("pyarrow.parquet", f"reading {path.name}", extra="eval", package="pyarrow")
        return [dict(row) for row in parquet.read_table(path).to_pylist()]
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkDataError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(doc, dict):  # {"data": [...]} and the like
        lists = [v for v in doc.values() if isinstance(v, list)]
        doc = lists[0] if len(lists) == 1 else None
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise BenchmarkDataError(f"{path}: expected a list of records (JSON objects)")
    return doc


def candidate_records(path: Path) -> Iterator[tuple[int, dict[str, Any], list[str], str]]:
    """The records of an MVBench-style task file (``video``, ``question``, ``candidates``, ``answer`` as a candidate's
    text; MVBench, MLVU): ``(n, record, option texts, the answer's letter)``."""
    for n, row in enumerate(read_rows(path)):
        where = f"{path} record {n}"
        need(row, ("video", "question", "candidates", "answer"), where)
        options = [str(c) for c in row["candidates"]]
        yield n, row, options, letter_of(options, str(row["answer"]), where)


def need(row: dict[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise BenchmarkDataError(f"{where}: missing field(s) {missing}; the record has {sorted(row)}")


def first_existing(candidates: Iterable[Path]) -> Path | None:
    return next((p for p in candidates if p.exists()), None)
