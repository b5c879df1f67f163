"""Charades-STA (Gao et al., ICCV 2017): temporal grounding, a sentence and the segment of the video it describes;
reported as R1@IoU 0.3 / 0.5 / 0.7 and mIoU over the 3,720 test sentences.

Layout, as the dataset is published (the Charades videos at 480p and the STA annotation files)::

    DATA/charades_sta_test.txt           one sentence per line: "3MSZA 24.3 30.4##person turn a light on."
                                         (also read from DATA/Charades_anno/ or DATA/annotations/)
    DATA/Charades_v1_480/3MSZA.mp4

or as lmms-eval's copy (``lmms-eval/charades_sta``): rows with ``video`` ("3MSZA.mp4"), ``caption`` and
``timestamp`` ([24.3, 30.4]) in a Parquet / JSON / JSON lines file in DATA (or DATA/data/), the videos in
DATA/Charades_v1_480/.

Prompt and settings: lmms-eval's ``temporal_grounding_charades`` ("Please find the visual event described by a
sentence in the video, determining its starting and ending times. ..." with the sentence, 50 new tokens),
32 frames (lmms-eval's InternVideo2.5 model default). The answer's first ``start - end`` is its span
(lrc/evaluation/answers.py); a model with a temporal head (``cgdetr``) is scored on the head's best span too.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Sequence

from lrc.evaluation.benchmark import GROUNDING, Benchmark
from lrc.evaluation.items import BenchmarkDataError, Item, first_existing, need, read_rows

ANNOTATION = "charades_sta_test.txt"
VIDEOS = "Charades_v1_480"
PRE_PROMPT = ("Please find the visual event described by a sentence in the video, determining its starting and ending "
              "times. The format should be: 'The event happens in the start time - end time'. For example, The event "
              "'person turn a light on' happens in the 24.3 - 30.4 seonds. Now I will give you the textual sentence: ")
POST_PROMPT = "Please return its start time and end time."


def _from_text(path: Path, data: Path) -> list[Item]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3:
            raise BenchmarkDataError(f"{path} line {n + 1}: expected 'VIDEO START END##sentence', got {line!r}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise BenchmarkDataError(f"{path} line {n + 1}: START and END must be seconds, got {line!r}") from None
        items.append(Item(id=f"{parts[0]}-{n}", video=data / VIDEOS / f"{parts[0]}.mp4", question=sentence.strip(),
                          category="all", span=(start, end)))
    return items


def _timestamp(value: Any, where: str) -> tuple[float, float]:
    try:
        pair = ast.literal_eval(value) if isinstance(value, str) else value
        start, end = (float(v) for v in pair)
    except (ValueError, TypeError, SyntaxError):
        raise BenchmarkDataError(f"{where}: timestamp must be [start, end] in seconds, got {value!r}") from None
    return start, end


def _from_rows(path: Path, data: Path) -> list[Item]:
    items = []
    for n, row in enumerate(read_rows(path)):
        where = f"{path} record {n}"
        need(row, ("video", "caption", "timestamp"), where)
        video = str(row["video"])
        items.append(Item(id=f"{Path(video).stem}-{n}", video=data / VIDEOS / video, question=str(row["caption"]),
                          category="all", span=_timestamp(row["timestamp"], where)))
    return items


def read(data: Path, subtitles: bool = False) -> list[Item]:
    text = first_existing(folder / ANNOTATION for folder in (data, data / "Charades_anno", data / "annotations"))
    if text is not None:
        return _from_text(text, data)
    for folder in (data, data / "data"):
        for pattern in ("*.parquet", "*.jsonl", "*.json"):
            files = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if files:
                return [item for f in files for item in _from_rows(f, data)]
    raise BenchmarkDataError(f"{data}: no {ANNOTATION} (Charades-STA's test annotations) nor lmms-eval's rows "
                             "(video, caption, timestamp) as Parquet / JSON")


def prompt(item: Item, timestamps: Sequence[float] = ()) -> str:
    return f"{PRE_PROMPT}{item.question.rstrip('. ')}. {POST_PROMPT}"


BENCHMARK = Benchmark(
    name="charades_sta", kind=GROUNDING, read=read, prompt=prompt, num_frames=32, max_new_tokens=50, category="all",
    reference="lmms-eval's temporal_grounding_charades (prompt, 50 new tokens, R1@0.3/0.5/0.7, mIoU); 32 frames")
