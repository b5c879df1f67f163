"""LongVideoBench (Wu et al., NeurIPS 2024): referring reasoning over videos up to an hour, 4-5 options;
reported by duration group (15, 60, 600, 3600 s) and question category.

Layout, as the Hugging Face dataset ``longvideobench/LongVideoBench`` ships it::

    DATA/lvb_val.json      [{"id", "video_path", "question", "candidates": [...], "correct_choice": 2,
                             "duration_group": 600, "question_category": "T3O", "duration", ...}, ...]
    DATA/videos/<video_path>

The Parquet copy lmms-eval reads (``validation-00000-of-00001.parquet``: options as ``option0`` ... ``option4``,
"N/A" for an absent one) is read too. The test split (``lvb_test_wo_gt.json``) has no answers: it is refused.

Prompt and settings: lmms-eval's ``longvideobench_val_v`` (the question, ``A. ...`` option lines, "Answer with the
option's letter from the given choices directly."), 16 frames (its ``max_num_frames``). Subtitles (the
interleaved ``_i`` variant) are not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lrc.evaluation.benchmark import MCQ, Benchmark, lettered
from lrc.evaluation.answers import LETTERS
from lrc.evaluation.items import BenchmarkDataError, Item, need, read_rows

ANSWER_PROMPT = "Answer with the option's letter from the given choices directly."


def annotation_files(data: Path) -> list[Path]:
    if (data / "lvb_val.json").is_file():
        return [data / "lvb_val.json"]
    found = sorted(data.glob("validation-*.parquet")) + sorted(data.glob("*/validation-*.parquet"))
    if found:
        return found
    if (data / "lvb_test_wo_gt.json").is_file():
        raise BenchmarkDataError(f"{data} holds only the test split (lvb_test_wo_gt.json), which has no answers; "
                                 "evaluate on the validation split (lvb_val.json)")
    raise BenchmarkDataError(f"{data}: no lvb_val.json (the Hugging Face dataset longvideobench/LongVideoBench) "
                             "nor validation-*.parquet")


def _options(row: dict[str, Any]) -> list[str]:
    if "candidates" in row:
        return [str(c) for c in row["candidates"]]
    options = [row.get(f"option{i}") for i in range(5)]
    return [str(o) for o in options if o is not None and o != "N/A"]


def read(data: Path, subtitles: bool = False) -> list[Item]:
    items = []
    for path in annotation_files(data):
        for n, row in enumerate(read_rows(path)):
            where = f"{path} record {n}"
            need(row, ("video_path", "question", "correct_choice"), where)
            options = _options(row)
            right = int(row["correct_choice"])
            if not 0 <= right < len(options):
                raise BenchmarkDataError(f"{where}: correct_choice {right} is not an index of its {len(options)} options")
            items.append(Item(
                id=str(row.get("id") or f"{path.stem}-{n}"), video=data / "videos" / str(row["video_path"]),
                question=str(row["question"]), category=str(row.get("duration_group", "")), options=options,
                answer=LETTERS[right], groups={"question_category": str(row.get("question_category", ""))}))
    return items


def prompt(item: Item, timestamps: Sequence[float] = ()) -> str:
    return f"{item.question}\n{lettered(item.options, 'dot')}\n{ANSWER_PROMPT}"


BENCHMARK = Benchmark(
    name="longvideobench", kind=MCQ, read=read, prompt=prompt, num_frames=16, max_new_tokens=32,
    category="duration_group", groups=("question_category",),
    reference="lmms-eval's longvideobench_val_v (prompt, 32 new tokens), its max_num_frames (16)")
