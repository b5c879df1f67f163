"""MVBench (Li et al., CVPR 2024): 20 temporal tasks, 200 multiple-choice questions each.

Layout, as the Hugging Face dataset ``OpenGVLab/MVBench`` ships it::

    DATA/json/action_sequence.json ... (one file per task: [{"video", "question", "candidates", "answer",
                                         "start"?, "end"?}, ...]; the answer is a candidate's text)
    DATA/video/star/Charades_v1_480/*.mp4, DATA/video/clevrer/video_validation/*.mp4, ...

Each task's videos live in the source dataset's folder (:data:`TASKS`). Four tasks ask about a segment of a
longer video (``start``/``end`` seconds: MVBench's "bound"); their frames are sampled inside it. The
``video`` revision that lmms-eval downloads has those segments already cut (``star/Charades_segment``,
``sta/sta_video_segment``, ``tvqa/video_fps3_hq_segment``) and no ``video/`` level; both layouts are read,
and a segment is applied only to a full-length video. Episodic reasoning's full-length "videos" are folders
of JPEG frames at 3 fps (``tvqa/frames_fps3_hq``).

Prompt and settings: InternVL's MVBench evaluation (``internvl_chat/eval/mvbench/evaluate_mvbench.py``, the
one InternVideo2.5's base model reports with): 16 frames at segment midpoints, MVBench's system prompt before
``Question: ...\\nOptions:\\n(A) ...`` and ``Only give the best option.`` after. The headline is the accuracy
over all questions (MVBench's tasks have 200 each, so it is also the mean over tasks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lrc.evaluation.benchmark import MCQ, Benchmark, lettered
from lrc.evaluation.items import BenchmarkDataError, Item, candidate_records, first_existing

# task -> where its videos are: (folder, a full-length video (its start/end apply), frame rate of a frame folder)
TASKS: dict[str, tuple[tuple[str, bool, float | None], ...]] = {
    "action_sequence": (("star/Charades_v1_480", True, None), ("star/Charades_segment", False, None)),
    "action_prediction": (("star/Charades_v1_480", True, None), ("star/Charades_segment", False, None)),
    "action_antonym": (("ssv2_video", False, None), ("ssv2_video_mp4", False, None)),
    "fine_grained_action": (("Moments_in_Time_Raw/videos", False, None),),
    "unexpected_action": (("FunQA_test/test", False, None),),
    "object_existence": (("clevrer/video_validation", False, None),),
    "object_interaction": (("star/Charades_v1_480", True, None), ("star/Charades_segment", False, None)),
    "object_shuffle": (("perception/videos", False, None),),
    "moving_direction": (("clevrer/video_validation", False, None),),
    "action_localization": (("sta/sta_video", True, None), ("sta/sta_video_segment", False, None)),
    "scene_transition": (("scene_qa/video", False, None),),
    "action_count": (("perception/videos", False, None),),
    "moving_count": (("clevrer/video_validation", False, None),),
    "moving_attribute": (("clevrer/video_validation", False, None),),
    "state_change": (("perception/videos", False, None),),
    "fine_grained_pose": (("nturgbd", False, None), ("nturgbd_convert", False, None)),
    "character_order": (("perception/videos", False, None),),
    "egocentric_navigation": (("vlnqa", False, None),),
    "episodic_reasoning": (("tvqa/frames_fps3_hq", True, 3.0), ("tvqa/video_fps3_hq_segment", False, None)),
    "counterfactual_inference": (("clevrer/video_validation", False, None),),
}

SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement "
          "of objects, and the action and pose of persons. Based on your observations, select the best option that "
          "accurately addresses the question.\n")
QUESTION_SUFFIX = "\nOnly give the best option."


def _where(data: Path, task: str, video: str) -> tuple[Path, bool, float | None]:
    """The video's path (the first layout that has it; else the official one), whether it is full length, its
    frame folder's rate."""
    places = [(root / folder / video, full, fps) for folder, full, fps in TASKS[task] for root in (data / "video", data)]
    found = first_existing(p for p, _, _ in places)
    return next(p for p in places if p[0] == found) if found else places[0]


def read(data: Path, subtitles: bool = False) -> list[Item]:
    folder = data / "json"
    if not folder.is_dir():
        raise BenchmarkDataError(f"{data}: no json/ folder; MVBench's layout is DATA/json/<task>.json and "
                                 "DATA/video/<source>/... (the Hugging Face dataset OpenGVLab/MVBench)")
    unknown = sorted(p.stem for p in folder.glob("*.json") if p.stem not in TASKS)
    if unknown:
        raise BenchmarkDataError(f"{folder}: {unknown} are not MVBench tasks; expected files named after its 20 tasks "
                                 f"({', '.join(TASKS)})")
    items: list[Item] = []
    for task in TASKS:
        path = folder / f"{task}.json"
        if not path.is_file():
            continue
        for n, row, options, answer in candidate_records(path):
            video, full, fps = _where(data, task, str(row["video"]))
            bounded = full and ("start" in row or "end" in row)
            items.append(Item(
                id=f"{task}/{n}", video=video, question=str(row["question"]), category=task, options=options,
                answer=answer, fps=fps,
                start=float(row["start"]) if bounded and row.get("start") is not None else None,
                end=float(row["end"]) if bounded and row.get("end") is not None else None))
    if not items:
        raise BenchmarkDataError(f"{folder} holds none of MVBench's task files ({', '.join(f'{t}.json' for t in TASKS)})")
    return items


def prompt(item: Item, timestamps: Sequence[float] = ()) -> str:
    return f"{SYSTEM}\nQuestion: {item.question}\nOptions:\n{lettered(item.options)}{QUESTION_SUFFIX}"


BENCHMARK = Benchmark(
    name="mvbench", kind=MCQ, read=read, prompt=prompt, num_frames=16, max_new_tokens=16, category="task",
    mean_over_categories=True,
    reference="InternVL's evaluate_mvbench.py (16 frames, MVBench's system prompt, 'Only give the best option.'); "
              "lmms-eval's mvbench task uses the same question layout")
