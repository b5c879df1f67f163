"""A small benchmark in MVBench's format from the synthetic scenes (``lrc data synth OUT --bench mvbench``), so
``lrc eval`` runs end to end on a laptop and in CI (docs/evaluation.md).

    synthesize_mvbench("data/synth-mvbench", videos=60, seed=0)

writes MVBench's layout (lrc/evaluation/mvbench.py reads it exactly as it reads the real one)::

    OUT/json/moving_attribute.json   colour and shape questions: [{"video", "question", "candidates", "answer"}]
    OUT/json/moving_direction.json   the direction the objects move in
    OUT/json/moving_count.json       how many objects there are
    OUT/video/clevrer/video_validation/synth-mvbench-000000.mp4 ...   (MVBench's folder for these CLEVRER tasks)
    OUT/meta.json

The questions are worded as the synthetic training corpus words them (lrc/data/synth/corpus.py), so a model
trained on it (``make demo``) knows their words; the answer is a candidate's text, as in MVBench. The videos are
short (``min_seconds``-``max_seconds``) and come from random streams of their own: none is a training video of a
corpus with the same seed. Answer positions are balanced per task (lrc/data/synth/scenes.py AnswerDeck).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lrc.data.synth.scenes import DIRECTIONS, PALETTE, SHAPES, AnswerDeck, encode_video, render, video_codec, video_spec

GENERATOR_VERSION = "lrc.data.synth.bench/1"
VIDEO_FOLDER = "video/clevrer/video_validation"  # where MVBench keeps these tasks' (CLEVRER) videos
TASKS = ("moving_attribute", "moving_direction", "moving_count")


def _candidates(correct: str, wrong: list[str], position: int, rng: np.random.Generator) -> list[str]:
    others = [str(w) for w in rng.permutation(wrong)]
    return others[:position] + [correct] + others[position:]


def _questions(spec: dict[str, Any], rng: np.random.Generator, deck: AnswerDeck) -> list[tuple[str, str, list[str], str]]:
    """(task, question, candidates, answer) of one video, in the corpus's words."""
    objects = spec["objects"]
    shapes = [o["shape"] for o in objects]
    named = objects[int(rng.choice([k for k, o in enumerate(objects) if shapes.count(o["shape"]) == 1]))]
    wrong = [str(c) for c in rng.choice([c for c in PALETTE if c != named["colour"]], size=3, replace=False)]
    # (task, answer deck, question, right candidate, wrong ones, how many candidates)
    out = [("moving_attribute", "colour", f"What colour is the {named['shape']}?", named["colour"], wrong, 4)]
    named = objects[int(rng.integers(len(objects)))]
    out.append(("moving_attribute", "shape", f"What shape is the {named['colour']} object?", named["shape"],
                [s for s in SHAPES if s != named["shape"]], 3))
    verb = "do the objects move" if len(objects) > 1 else "does the object move"
    out.append(("moving_direction", "direction", f"In which direction {verb}?", spec["direction"],
                [d for d in DIRECTIONS if d != spec["direction"]], 4))
    out.append(("moving_count", "count", "How many objects are in the video?", str(len(objects)),
                [str(c) for c in (1, 2, 3) if c != len(objects)], 3))
    found = []
    for task, kind, question, correct, wrong, n in out:
        position = deck.draw(kind, n)
        found.append((task, question, _candidates(correct, wrong, position, rng), correct))
    return found


def synthesize_mvbench(out_dir: str | os.PathLike, videos: int = 60, seed: int = 0, size: int = 64,
                       min_seconds: float = 3.0, max_seconds: float = 12.0) -> dict[str, Any]:
    """Write the MVBench-format set into ``out_dir``; returns ``{"videos", "questions": {task: n}, "out_dir"}``.
    The task files are written last, so an interrupted run leaves no set that looks complete."""
    if videos < 1:
        raise ValueError(f"synthesize_mvbench: videos must be >= 1, got {videos}")
    if size < 16 or size % 2:
        raise ValueError(f"synthesize_mvbench: size must be an even number of pixels >= 16 (yuv420p), got {size}")
    out = Path(out_dir)
    folder = out / VIDEO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    codec = video_codec()
    deck = AnswerDeck(np.random.default_rng([seed, 901]))
    rows: dict[str, list[dict[str, Any]]] = {task: [] for task in TASKS}
    for i in range(videos):
        rng = np.random.default_rng([seed, 900, i])  # video i depends on (seed, i) only
        spec = video_spec(rng, size, min_seconds, max_seconds)
        name = f"synth-mvbench-{i:06d}.mp4"
        encode_video(render(spec, size), folder / name, spec["fps"], size, codec)
        for task, question, candidates, answer in _questions(spec, rng, deck):
            rows[task].append({"video": name, "question": question, "candidates": candidates, "answer": answer})
    meta = {"generator": GENERATOR_VERSION, "format": "mvbench", "seed": seed, "videos": videos, "size": size,
            "min_seconds": min_seconds, "max_seconds": max_seconds, "codec": codec,
            "questions": {task: len(found) for task, found in rows.items()}}
    (out / "json").mkdir(exist_ok=True)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for task, found in rows.items():
        tmp = out / "json" / f".{task}.json.tmp"
        tmp.write_text(json.dumps(found, indent=1) + "\n")
        os.replace(tmp, out / "json" / f"{task}.json")
    return {"videos": videos, "questions": meta["questions"], "out_dir": str(out)}
