"""MLVU (Zhou et al., 2024): multi-task long video understanding; its dev set's seven multiple-choice tasks,
reported as M-Avg, the mean accuracy over the tasks.

Layout, as the Hugging Face dataset ``MLVU/MVLU`` ships it (its ``MLVU/`` folder, or that folder's parent)::

    DATA/json/1_plotQA.json 2_needle.json 3_ego.json 4_count.json 5_order.json 6_anomaly_reco.json
              7_topic_reasoning.json     [{"video", "duration", "question", "candidates": [...], "answer": text,
                                           "question_type"}, ...]
    DATA/video/1_plotQA/<video> ...      one folder per task file

The generation tasks (``8_sub_scene.json``, ``9_summary.json``) are scored by a GPT judge in MLVU and are not
read. Prompt and settings: MLVU's own multiple-choice evaluation (``choice_bench.py``): ``Question: ...``,
``Options:`` with ``(A) ...`` lines, "Only give the best option.", 16 frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lrc.evaluation.benchmark import MCQ, Benchmark, lettered
from lrc.evaluation.items import BenchmarkDataError, Item, candidate_records

TASK_FILES = ("1_plotQA", "2_needle", "3_ego", "4_count", "5_order", "6_anomaly_reco", "7_topic_reasoning")
QUESTION_SUFFIX = "\nOnly give the best option."


def root_of(data: Path) -> Path:
    for root in (data, data / "MLVU"):
        if (root / "json").is_dir():
            return root
    raise BenchmarkDataError(f"{data}: no json/ folder; MLVU's layout is DATA/json/1_plotQA.json ... and "
                             "DATA/video/1_plotQA/... (the MLVU/ folder of the Hugging Face dataset MLVU/MVLU)")


def read(data: Path, subtitles: bool = False) -> list[Item]:
    root = root_of(data)
    items = []
    for stem in TASK_FILES:
        path = root / "json" / f"{stem}.json"
        if not path.is_file():
            continue
        for n, row, options, answer in candidate_records(path):
            items.append(Item(
                id=f"{stem}/{n}", video=root / "video" / stem / str(row["video"]), question=str(row["question"]),
                category=str(row.get("question_type") or stem.split("_", 1)[1]), options=options, answer=answer))
    if not items:
        raise BenchmarkDataError(f"{root / 'json'} holds none of MLVU's multiple-choice files "
                                 f"({', '.join(f'{s}.json' for s in TASK_FILES)})")
    return items


def prompt(item: Item, timestamps: Sequence[float] = ()) -> str:
    return f"Question: {item.question}\nOptions:\n{lettered(item.options)}{QUESTION_SUFFIX}"


BENCHMARK = Benchmark(
    name="mlvu", kind=MCQ, read=read, prompt=prompt, num_frames=16, max_new_tokens=16, category="task",
    mean_over_categories=True, reference="MLVU's choice_bench.py (16 frames, its question layout)")
