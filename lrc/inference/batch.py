"""Batch inference: every record of an annotation file answered, one JSON line per record (``lrc infer``).

For each record the conversation up to its last human turn is the prompt (earlier turns are the history)
and its last assistant turn, when there is one, is the reference ``answer`` written beside the
``prediction``. The output is appended one line at a time and flushed to disk, so a run that stops (a
kill, a full disk) resumes where it was: the ids already in OUT are skipped, and a line cut off by the
stop is dropped first. A record whose video cannot be read, or whose prompt does not fit, gets a line with
its ``error`` and the run goes on.

Line: ``{"id", "video", "task", "question", "prediction", "answer", "correct" (MCQ), "spans", "boxes",
"masks" (COCO RLE per frame), "timestamps"}`` (lrc/inference/results.py).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrc.files import append_jsonl
from lrc.inference.chat import InferenceError, VideoChat

log = logging.getLogger(__name__)


@dataclass
class InferSummary:
    out: Path
    records: int = 0  # in the annotation file
    done_before: int = 0  # already in OUT when this run started
    written: int = 0  # lines this run wrote
    errors: int = 0  # records answered with an error line (this run)
    mcq: list[bool] = field(default_factory=list)  # this run's multiple-choice records: correct or not

    def text(self) -> str:
        parts = [f"{self.written} prediction(s) written to {self.out}"]
        if self.done_before:
            parts.append(f"{self.done_before} already there (resumed)")
        if self.errors:
            parts.append(f"{self.errors} record(s) with an error (their lines say why)")
        if self.mcq:
            parts.append(f"MCQ accuracy {sum(self.mcq) / len(self.mcq):.3f} over {len(self.mcq)}")
        return "; ".join(parts)


def finished_ids(out: Path) -> set[str]:
    """Ids already answered in ``out``; a last line cut off mid-write is removed from the file."""
    if not out.is_file():
        return set()
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):  # an incomplete last line: a stop in the middle of a write
        with out.open("r+b") as fh:
            fh.truncate(keep)
    done = set()
    for line in data[:keep].splitlines():
        if line.strip():
            done.add(str(json.loads(line)["id"]))
    return done


def _prompt(conversations: list[dict[str, str]]) -> tuple[list[tuple[str, str]], str, str | None]:
    """(history pairs, the question to answer, the reference answer or None) of a record's turns."""
    turns = list(conversations)
    answer = None
    if turns and turns[-1].get("from") == "gpt":
        answer = turns.pop()["value"]
    if not turns or turns[-1].get("from") != "human":
        raise InferenceError("the conversation has no human turn to answer")
    question = turns.pop()["value"]
    if len(turns) % 2 or any(t.get("from") != r for t, r in zip(turns, ["human", "gpt"] * len(turns))):
        raise InferenceError("the turns before the question must alternate human, gpt")
    return [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns), 2)], question, answer


def _correct(prediction: str, answer: str) -> bool:
    """A multiple-choice prediction is right when it is the answer, or starts with the answer's letter ("B", "B.",
    "B) red")."""
    said = prediction.strip().rstrip(".").strip()
    gold = answer.strip().rstrip(".").strip()
    if said.lower() == gold.lower():
        return True
    return len(gold) == 1 and said[:1].upper() == gold.upper() and (len(said) == 1 or not said[1].isalnum())


def infer(chat: VideoChat, annotations: str | Path, out: str | Path, *, max_new_tokens: int = 64,
          num_frames: int | None = None, limit: int | None = None, restart: bool = False,
          progress: bool = True) -> InferSummary:
    """Answer every record of ``annotations`` (JSONL, docs/data.md) with ``chat`` into ``out`` (JSONL)."""
    from lrc.data.annotations import load_annotations
    from lrc.data.video import VideoReadError

    records = load_annotations(annotations)
    out = Path(out)
    if restart and out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out)
    summary = InferSummary(out=out, records=len(records), done_before=len(done))
    todo = [r for r in records if r.id not in done][:limit]
    bar = _progress(len(records), len(done), progress)
    with out.open("a", encoding="utf-8") as fh:
        for rec in todo:
            line: dict[str, Any] = {"id": rec.id, "video": str(rec.video) if rec.video else None, "task": rec.task}
            try:
                if rec.video is None:
                    raise InferenceError("a record without a video (image records) is not supported by lrc infer")
                history, question, answer = _prompt(rec.conversations)
                result = chat.chat(rec.video, question, history, max_new_tokens=max_new_tokens, num_frames=num_frames,
                                   input_boxes=rec.input_boxes)
                line.update(question=question, prediction=result.text, answer=answer)
                if rec.task == "mcq" and answer is not None:
                    line["correct"] = _correct(result.text, answer)
                    summary.mcq.append(line["correct"])
                line.update({k: v for k, v in result.to_dict().items() if k != "text"})
            except (InferenceError, VideoReadError) as exc:
                line["error"] = str(exc)
                summary.errors += 1
                log.warning("record %s: %s", rec.id, exc)
            append_jsonl(fh, line)
            summary.written += 1
            bar.update(1)
    bar.close()
    return summary


def _progress(total: int, done: int, enabled: bool) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with transformers; without it, no bar
        enabled = False
    if not enabled:
        class _Quiet:
            def update(self, _: int) -> None: ...

            def close(self) -> None: ...
        return _Quiet()
    return tqdm(total=total, initial=done, desc="lrc infer", unit="record", file=sys.stderr, dynamic_ncols=True)
