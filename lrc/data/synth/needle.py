"""Needle-in-a-haystack videos (paper Fig. 3, after VideoChat-Flash's NIAH) from the synthetic renderer.

A *haystack* of ``N`` frames is written at 1 fps, so that sampling every frame is the paper's 1 fps and
each video frame becomes one model frame (``N`` frames = ``N`` × tokens-per-frame visual tokens). It is a
stream of short synthetic *scenes* (lrc.data.synth's moving coloured shapes on a dark background, 4-16
frames each, like the shots of a long video); the stream of haystack ``q`` depends only on
``(seed, q)``, so the haystack of a short video is the start of a longer one, and moving a needle to
another depth changes nothing else.

A *needle* is a clip of ``needle_frames`` identical frames: one shape in one palette colour on a white
background (the only light frames in the video). The paper repeats the needle image as one clip; its
start is aligned to a multiple of ``needle_frames``, so with ``needle_frames`` = the compressor's
``clip_len`` the needle is exactly one HiCo clip and is never merged with haystack frames. Depth ``d``
puts it at frame ``⌊d·(N − needle_frames) / needle_frames + ½⌋·needle_frames``: 0 = the first frames,
1 = the last ones. The haystack holds shapes of every palette colour, so a colour is only the right
answer if the model found the white frames.

Questions (multiple choice, in the corpus's answer style):

* single-hop (1 needle): "What colour is the shape on the white frames?" — the needle's colour and three
  other colours.
* multi-hop (2 needles of different colours; the first at depth ``d``, the second at another aligned
  position drawn from the question's stream): "Two shapes are shown on white frames. Which colour is
  shown first?" — both needle colours and two others. The answer needs both needles *and* their
  order: finding one needle gives at best 1/2 between the two needle colours.

The same templates serve training records (``lrc data synth --tasks needle``: short haystacks, random
depths, one or two needles) and the evaluation grid (lrc/commands/niah.py), so the tokenizer of a corpus with
the needle task covers every NIAH question.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lrc.data.synth.scenes import PALETTE, SHAPES, AnswerDeck, encode_video, mcq, render, shape_mask, video_codec, video_spec

NEEDLE_BACKGROUND = 235  # light grey: every haystack scene has a dark background (10-40)
SCENE_FRAMES = (4, 16)  # inclusive bounds of a haystack scene's length
SINGLE_QUESTION = "What colour is the shape on the white frames?"
MULTI_QUESTION = "Two shapes are shown on white frames. Which colour is shown first?"
HOPS = (1, 2)
QUESTION_TYPES = {1: "needle_single", 2: "needle_multi"}
# training haystacks (lrc data synth --tasks needle): short, in multiples of 4 frames (the tiny model's clip)
TRAIN_FRAME_COUNTS = (8, 12, 16, 20, 24)
TRAIN_NEEDLE_FRAMES = 4


def needle_frame(shape: str, colour: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One needle frame: a large ``colour`` ``shape`` (about 0.4-0.5 of the side) on a light background."""
    frame = np.full((size, size, 3), NEEDLE_BACKGROUND, dtype=np.uint8)
    side = int(round(size * rng.uniform(0.4, 0.5)))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    frame[top:top + side, left:left + side][shape_mask(shape, side)] = PALETTE[colour]
    return frame


def haystack_stream(seed: int, q: int, size: int) -> Iterator[np.ndarray]:
    """Haystack ``q``'s frames, scene after scene, without end (take as many as needed)."""
    for k in range(10**9):
        rng = np.random.default_rng([seed, 500, q, k])
        spec = video_spec(rng, size, 3.0, 20.0)
        # the spec's paths are in normalised time, so its length can be set freely
        spec["num_frames"] = int(rng.integers(SCENE_FRAMES[0], SCENE_FRAMES[1] + 1))
        yield from render(spec, size)


def needle_starts(num_frames: int, needle_frames: int, depth: float, hops: int,
                  rng: np.random.Generator) -> list[int]:
    """First frame of each needle: the first at ``depth``, the others at distinct aligned positions."""
    slots = (num_frames - needle_frames) // needle_frames + 1  # aligned positions a needle can start at
    first = int(np.floor(depth * (slots - 1) + 0.5))  # half up (Python's round() halves to even)
    others = [s for s in range(slots) if s != first]
    chosen = [first] + [int(s) for s in rng.choice(others, size=hops - 1, replace=False)]
    return [s * needle_frames for s in chosen]


def check_haystack(num_frames: int, needle_frames: int, depth: float, hops: int) -> None:
    if hops not in HOPS:
        raise ValueError(f"needle: hops must be one of {HOPS}, got {hops!r}")
    if not 0 <= depth <= 1:
        raise ValueError(f"needle: depth must be in [0, 1], got {depth!r}")
    if needle_frames < 1 or num_frames % needle_frames or num_frames < (hops + 1) * needle_frames:
        raise ValueError(f"needle: a haystack of {num_frames} frames must be a multiple of needle_frames="
                         f"{needle_frames} and hold at least {hops + 1} such clips ({hops} needle(s) and haystack)")


def write_haystack(path: Path, num_frames: int, depth: float, hops: int, needle_frames: int, seed: int, q: int,
                   size: int, answer_style: str, deck: AnswerDeck, codec: str | None = None) -> dict[str, Any]:
    """Write one haystack video (unless ``path`` exists: it depends only on the arguments) and return its
    question: ``{conversations, options, answer, question_type, needle}`` (:func:`haystack_question`)."""
    question, needles = haystack_question(num_frames, depth, hops, needle_frames, seed, q, size, answer_style, deck)
    if not path.exists():
        starts = [s for s, _ in question["needle"]["frames"]]
        encode_video(_interleave(num_frames, needle_frames, starts, needles, haystack_stream(seed, q, size)),
                     path, 1, size, codec or video_codec())
    return question


def haystack_question(num_frames: int, depth: float, hops: int, needle_frames: int, seed: int, q: int, size: int,
                      answer_style: str, deck: AnswerDeck) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Haystack ``q``'s question and its needle frames, without rendering or writing the haystack (so its
    words can be checked before any video is written). The needle's shapes, colours and the second
    needle's position come from stream ``(seed, 501, q, hops)``, so a question keeps its needles across
    frame counts and depths; the haystack's scenes come from streams of their own (:func:`haystack_stream`)."""
    check_haystack(num_frames, needle_frames, depth, hops)
    rng = np.random.default_rng([seed, 501, q, hops])
    colours = [str(c) for c in rng.choice(list(PALETTE), size=hops, replace=False)]
    shapes = [str(s) for s in rng.choice(SHAPES, size=hops)]
    needles = [needle_frame(s, c, size, rng) for s, c in zip(shapes, colours)]
    starts = needle_starts(num_frames, needle_frames, depth, hops, rng)
    first = colours[int(np.argmin(starts))]
    if hops == 1:
        question, wrong = SINGLE_QUESTION, [c for c in PALETTE if c != colours[0]]
        wrong = [str(c) for c in rng.choice(wrong, size=3, replace=False)]
    else:
        question = MULTI_QUESTION
        others = [str(c) for c in rng.choice([c for c in PALETTE if c not in colours], size=2, replace=False)]
        wrong = [c for c in colours if c != first] + others
    text, options, answer = mcq(question, first, wrong, deck.draw(QUESTION_TYPES[hops], 4), rng, answer_style)
    return {"conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
            "options": options, "answer": answer, "question_type": QUESTION_TYPES[hops],
            "needle": {"depth": depth, "hops": hops, "frames": [[s, s + needle_frames] for s in starts],
                       "colours": colours, "shapes": shapes, "haystack_frames": num_frames}}, needles


def _interleave(num_frames: int, needle_frames: int, starts: Sequence[int], needles: Sequence[np.ndarray],
                haystack: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    which = {f: k for k, s in enumerate(starts) for f in range(s, s + needle_frames)}
    for f in range(num_frames):
        yield needles[which[f]] if f in which else next(haystack)


def record(rec_id: str, video: str, num_frames: int, question: dict[str, Any]) -> dict[str, Any]:
    """An annotation record (docs/data.md) for one haystack question: a plain MCQ plus a ``needle`` field."""
    return {"id": rec_id, "video": video, "duration": float(num_frames), "fps": 1.0, "task": "mcq", **question}


def training_records(out: Path, count: int, seed: int, size: int, answer_style: str,
                     val_fraction: float) -> dict[str, list[dict[str, Any]]]:
    """``count`` short haystack videos in ``out/videos`` and their records, split into train and val
    (``lrc data synth --tasks needle``): frame counts from ``TRAIN_FRAME_COUNTS``, a random depth, one
    needle or two (two only where the haystack has room)."""
    codec = video_codec()
    num_val = min(max(int(round(val_fraction * count)), 1 if count >= 2 else 0), max(count - 1, 0))
    decks = {"train": AnswerDeck(np.random.default_rng([seed, 502])),
             "val": AnswerDeck(np.random.default_rng([seed, 503]))}
    records: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    for i in range(count):
        rng = np.random.default_rng([seed, 504, i])
        num_frames = int(rng.choice(TRAIN_FRAME_COUNTS))
        hops = int(rng.choice([h for h in HOPS if num_frames >= (h + 1) * TRAIN_NEEDLE_FRAMES]))
        depth = float(rng.uniform())
        split = "val" if i < num_val else "train"
        name = f"needle-{i:06d}"
        # haystack streams of their own (q offset), so training never shows an evaluation haystack
        question = write_haystack(out / "videos" / f"{name}.mp4", num_frames, depth, hops, TRAIN_NEEDLE_FRAMES,
                                  seed, 10**6 + i, size, answer_style, decks[split], codec)
        records[split].append(record(name, f"videos/{name}.mp4", num_frames, question))
    return records


def grid_cell(root: Path, num_frames: int, depth: float, hops: int, questions: int, needle_frames: int,
              seed: int, size: int, answer_style: str) -> Path:
    """The annotation file of one evaluation cell, written with its videos unless already on disk.

    Cached under ``root/seed{seed}-size{size}-nf{needle_frames}-{answer_style}/``: a video depends only
    on its name's parameters, so it is written only when missing, and the cell's JSONL is written after
    all its videos (its presence marks a complete cell)."""
    folder = root / f"seed{seed}-size{size}-nf{needle_frames}-{answer_style}"
    cell = folder / f"n{num_frames}" / f"d{depth:g}-h{hops}-q{questions}.jsonl"
    if cell.is_file():
        return cell
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    cell.parent.mkdir(parents=True, exist_ok=True)
    deck = _cell_deck(num_frames, depth, hops, seed)
    lines = []
    for q in range(questions):
        name = _video_name(num_frames, depth, hops, q)
        question = write_haystack(folder / "videos" / f"{name}.mp4", num_frames, depth, hops, needle_frames,
                                  seed, q, size, answer_style, deck)
        lines.append(json.dumps(record(name, f"../videos/{name}.mp4", num_frames, question)))
    tmp = cell.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, cell)
    return cell


def grid_questions(num_frames: int, depth: float, hops: int, questions: int, needle_frames: int, seed: int,
                   size: int, answer_style: str) -> list[tuple[str, dict[str, Any]]]:
    """``(record id, question)`` of each question of one evaluation cell, the same as :func:`grid_cell`
    writes, without rendering or writing a video: ``lrc niah`` checks their words against the model's
    vocabulary before any haystack is written."""
    deck = _cell_deck(num_frames, depth, hops, seed)
    return [(_video_name(num_frames, depth, hops, q),
             haystack_question(num_frames, depth, hops, needle_frames, seed, q, size, answer_style, deck)[0])
            for q in range(questions)]


def _cell_deck(num_frames: int, depth: float, hops: int, seed: int) -> AnswerDeck:
    """One answer deck per cell: each cell's answers cover the option positions evenly."""
    return AnswerDeck(np.random.default_rng([seed, 505, num_frames, hops, int(round(depth * 1000))]))


def _video_name(num_frames: int, depth: float, hops: int, q: int) -> str:
    return f"n{num_frames}-d{depth:g}-h{hops}-q{q}"
