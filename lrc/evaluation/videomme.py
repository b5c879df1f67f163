"""Video-MME (Fu et al., 2024): 900 videos (short < 2 min, medium 4-15 min, long 30-60 min), 3 questions each,
four options; reported without and with subtitles, by duration.

Layout, as the Hugging Face dataset ``lmms-lab/Video-MME`` ships it (and lmms-eval reads it)::

    DATA/videomme/test-00000-of-00001.parquet   rows: video_id, duration (short|medium|long), domain,
                                                sub_category, url, videoID, question_id, task_type, question,
                                                options (["A. ...", "B. ...", ...]), answer ("A".."D")
    DATA/data/<videoID>.mp4                     the videos (the zip files unpacked)
    DATA/subtitle/<videoID>.srt                 subtitles, for the videos that have them

The rows may also be a JSON / JSON lines file (``DATA/videomme.json``), or the official repository's nested JSON
(one entry per video with its ``questions``).

Prompt: Video-MME's own ("Select the best answer to the following multiple-choice question based on the
video. Respond with only the letter (A, B, C, or D) of the correct option." ... "The best answer is:"); with
subtitles, the subtitle lines on screen at the sampled frames come first (lmms-eval's selection: the lines whose
time span holds a sampled frame), or "No subtitles available". 32 frames (lmms-eval's ``frame_num``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from lrc.evaluation.benchmark import MCQ, Benchmark
from lrc.evaluation.items import BenchmarkDataError, Item, first_existing, need, read_rows

INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video{subs}. Respond "
               "with only the letter (A, B, C, or D) of the correct option.")
ANSWER_PROMPT = "The best answer is:"
SUBTITLES_HEADER = "This video's subtitles are listed below:"
NO_SUBTITLES = "No subtitles available"
EXTENSIONS = (".mp4", ".MP4", ".mkv", ".webm")


def annotation_files(data: Path) -> list[Path]:
    for folder in (data / "videomme", data):
        for pattern in ("*.parquet", "*.jsonl", "*.json"):
            found = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if found:
                return found
    raise BenchmarkDataError(f"{data}: no Video-MME annotations; expected DATA/videomme/test-00000-of-00001.parquet "
                             "(the Hugging Face dataset lmms-lab/Video-MME) or a JSON / JSON lines file of its rows")


def _rows(path: Path) -> list[dict[str, Any]]:
    """Flat rows; the official repository's JSON nests each video's questions under it."""
    rows = []
    for row in read_rows(path):
        if isinstance(row.get("questions"), list):
            video = {k: v for k, v in row.items() if k != "questions"}
            rows += [{**video, **q} for q in row["questions"]]
        else:
            rows.append(row)
    return rows


def read(data: Path, subtitles: bool = False) -> list[Item]:
    items = []
    for path in annotation_files(data):
        for n, row in enumerate(_rows(path)):
            where = f"{path} record {n}"
            need(row, ("question", "options", "answer", "duration"), where)
            video_id = str(row.get("videoID") or row.get("video_id") or "")
            if not video_id:
                raise BenchmarkDataError(f"{where}: no videoID (the YouTube id naming DATA/data/<videoID>.mp4)")
            lettered = [str(o) for o in row["options"]]
            options = [re.sub(r"^\s*[A-Z]\s*[.)]\s*", "", o) for o in lettered]
            video = first_existing(data / "data" / f"{video_id}{ext}" for ext in EXTENSIONS) \
                or data / "data" / f"{video_id}.mp4"
            srt = data / "subtitle" / f"{video_id}.srt"
            items.append(Item(
                id=str(row.get("question_id") or f"{video_id}-{n}"), video=video, question=str(row["question"]),
                category=str(row["duration"]), options=options, answer=str(row["answer"]).strip().upper()[:1],
                groups={"domain": str(row.get("domain", "")), "task_type": str(row.get("task_type", ""))},
                subtitles=srt if subtitles else None, extra={"lettered": lettered}))
    return items


def parse_srt(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) per subtitle of an SRT file, markup (``<font ...>``) removed."""
    out = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace").replace("\r", "")):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        times = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if times is None:
            continue
        try:
            start, end = (_clock(t) for t in lines[times].split("-->"))
        except ValueError:
            continue
        text = re.sub(r"<[^>]+>", "", " ".join(lines[times + 1:])).strip()
        if text:
            out.append((start, end, text))
    return out


def _clock(text: str) -> float:
    h, m, s = text.strip().replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def subtitles_at(path: Path | None, timestamps: Sequence[float]) -> str:
    """The subtitle lines on screen at any of ``timestamps``, in order (lmms-eval's selection for Video-MME)."""
    if path is None or not path.is_file():
        return NO_SUBTITLES
    lines = [text for start, end, text in parse_srt(path) if any(start <= t < end for t in timestamps)]
    return "\n".join(dict.fromkeys(lines)) or NO_SUBTITLES


def prompt(item: Item, timestamps: Sequence[float] = ()) -> str:
    body = f"{item.question}\n" + "\n".join(item.extra["lettered"]) + f"\n{ANSWER_PROMPT}"
    if item.subtitles is None:
        return f"{INSTRUCTION.format(subs='')}\n{body}"
    return (f"{SUBTITLES_HEADER}\n{subtitles_at(item.subtitles, timestamps)}\n"
            f"{INSTRUCTION.format(subs=' and the subtitles')}\n{body}")


BENCHMARK = Benchmark(
    name="videomme", kind=MCQ, read=read, prompt=prompt, num_frames=32, max_new_tokens=16, category="duration",
    groups=("domain", "task_type"), subtitles=True,
    reference="Video-MME's prompt (frames; frames + subtitles), lmms-eval's subtitle selection and frame_num (32)")
