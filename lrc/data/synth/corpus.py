"""The built-in synthetic corpus: real MP4 files of moving coloured shapes, with multiple-choice QA.

    synthesize("data/synth", videos=60, seed=0)

writes

    data/synth/videos/synth-000000.mp4 ...   H.264 (MPEG-4 Part 2 if libx264 is missing), yuv420p
    data/synth/train.jsonl, val.jsonl          LLaVA-style conversations, split by video
    data/synth/tokenizer/                      a word-level tokenizer covering every corpus text
    data/synth/meta.json                       seed, counts, generator version

so the whole pipeline (decode -> sample -> encode -> compress -> LLM -> score) runs offline on a CPU
with no download (docs/data.md). Each video shows 1-3 large shapes of distinct colours on a dark
background, all moving monotonically in one direction across the frame, so that four questions have
one right answer a tiny model can learn from a few sampled frames:

    colour     "What colour is the circle?"                   (a shape present exactly once)
    shape      "What shape is the green object?"              (colours are distinct within a video)
    direction  "In which direction do the objects move?"     (left / right / up / down)
    count      "How many objects are in the video?"           (1 / 2 / 3)

Durations range from a few seconds to a few minutes (most are short), so samplers see long videos
too; long videos use low frame rates to keep the files small. Everything is deterministic in ``seed``:
video ``i`` depends only on ``(seed, i)``, so a larger corpus starts with the same videos.

``synthesize(..., tasks=("mcq", "temporal", "region", "mask", "preference"))`` adds TPO task records
(paper §3.2): when is an extra *event* object visible (spans), where is an object in FrameK (per-frame
boxes), an MCQ about the object inside an input box (``<region>``), track an object (per-frame boxes
and COCO RLE masks read from the renderer's label maps, so they match the pixels), and MCQ preference
pairs. Schema and examples: docs/data.md. The default ``("mcq",)`` writes exactly the corpus above.
"""

from __future__ import annotations

import json
import os
import string
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lrc.config.schema import ANNOTATION_FORMATS, ANSWER_STYLES, SYNTH_TASKS, DataConfig
from lrc.data.synth.scenes import (DIRECTIONS, PALETTE, SHAPES, AnswerDeck, encode_video, mcq, render,
                                  render_with_labels, video_codec, video_spec)

GENERATOR_VERSION = "lrc.data.synth/1"

QUESTION_TYPES = ("colour", "shape", "direction", "count")

# TPO tasks (paper §3.2) the corpus can carry besides the MCQs (docs/data.md shows a record of each;
# needle: lrc/data/synth/needle.py), as data.synth_tasks names them
TASKS = SYNTH_TASKS
# lrc adds these to a real model's tokenizer when TPO heads are configured (lrc/data/prompt.py); a corpus
# tokenizer that has them already keeps the demo model's vocabulary fixed.
TASK_TOKENS = ("<temp>", "<box>", "<track>", "<region>", "<temp_begin>", "<box_begin>", "<track_begin>")
COUNT_QUESTION = "How many objects are in the video?"
IMAGE_COUNT_QUESTION = "How many objects are in the image?"
# the words lrc's prompt puts around images (lrc/data/prompt.py: "ImageN: " before each of several images),
# in the vocabulary of a corpus with images
IMAGE_PROMPT_TEXTS = ("Image1: ",)
# with a temporal event the extra object is on screen only part of the time: count what stays
COUNT_QUESTION_WITH_EVENT = "How many objects are visible for the whole video?"
TRACK_MAX_SECONDS = 20.0  # region/mask records (per-frame boxes and masks) only for videos this short
REGION_FRAMES = 4  # region questions name Frame1..Frame4 (lrc's demo samples 4 frames)
EVENT_MIN_FRACTION, EVENT_MAX_FRACTION = 0.25, 0.5  # of the video's frames

# Fixed vocabulary lrc's prompt adds around the corpus text (lrc/data/prompt.py): the time prefix, the
# "FrameN:" labels and the ChatML role names.
PROMPT_TEXTS = (
    "The video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it.",
    "Frame1: ",
    "user\n",
    "assistant\n",
    "system\n",
)
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<video>", "<image>", "<IMG_CONTEXT>")

# A word keeps one leading space (" red"), as GPT-style tokenizers do, so decode(encode(text)) gives
# the text back exactly. Digits are single tokens; punctuation marks and whitespace characters are
# tokens of their own ("\n" included: prompts are laid out in lines).
PRE_TOKENIZER_PATTERN = r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]|\s"


def _questions(spec: dict[str, Any], rng: np.random.Generator, deck: AnswerDeck,
               answer_style: str = DataConfig.synth_answer_style) -> dict[str, tuple[str, list[str], str]]:
    """The four MCQs of one video: question type -> (human text, option letters, answer letter)."""
    objects = spec["objects"]
    shapes = [o["shape"] for o in objects]
    questions = {}

    # colour: name a shape that occurs once; distractors are other palette colours
    named = rng.choice([o for o in objects if shapes.count(o["shape"]) == 1])
    wrong = [str(c) for c in rng.choice([c for c in PALETTE if c != named["colour"]], size=3, replace=False)]
    questions["colour"] = mcq(f"What colour is the {named['shape']}?", named["colour"], wrong,
                               deck.draw("colour", 4), rng, answer_style)

    # shape: name a colour (colours are distinct within a video); all three shapes are options
    named = rng.choice(objects)
    wrong = [s for s in SHAPES if s != named["shape"]]
    questions["shape"] = mcq(f"What shape is the {named['colour']} object?", named["shape"], wrong,
                              deck.draw("shape", 3), rng, answer_style)

    question = ("In which direction do the objects move?" if len(objects) > 1
                else "In which direction does the object move?")
    wrong = [d for d in DIRECTIONS if d != spec["direction"]]
    questions["direction"] = mcq(question, spec["direction"], wrong, deck.draw("direction", 4), rng, answer_style)

    wrong = [str(c) for c in (1, 2, 3) if c != len(objects)]
    questions["count"] = mcq(COUNT_QUESTION, str(len(objects)), wrong,
                              deck.draw("count", 3), rng, answer_style)
    return questions


# ---------------------------------------------------------------------------------------------------
# TPO task data: a temporal event, object tracks, region / mask / preference records


def _event(spec: dict[str, Any], size: int, rng: np.random.Generator, avoid_shape: str) -> dict[str, Any] | None:
    """An extra object shown only during frames [first_frame, last_frame): the temporal task's event.

    Its colour is one the video does not use and its shape is not the one the colour question names,
    so the MCQs stay unambiguous (the count question then asks for the objects visible for the
    whole video, see ``COUNT_QUESTION_WITH_EVENT``). It either moves like the base objects (same
    direction, same kind of path) or stands still, so the direction answer holds too, and it never
    comes within 2 px of a base object, so every object's box and mask is its whole sprite. Placement
    is drawn by rejection; None when no free place is found (then the video has no temporal record).
    """
    n = spec["num_frames"]
    vertical = spec["direction"] in ("up", "down")
    used = {o["colour"] for o in spec["objects"]}
    colour = str(rng.choice([c for c in PALETTE if c not in used]))
    shape = str(rng.choice([s for s in SHAPES if s != avoid_shape]))
    min_len = max(1, int(np.ceil(EVENT_MIN_FRACTION * n)))
    max_len = max(min_len, int(EVENT_MAX_FRACTION * n))
    t = np.arange(n) / (n - 1)
    margin = 2

    def boxes(o: dict[str, Any], frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        along = o["start"] + (o["end"] - o["start"]) * t[frames]
        cx, cy = (np.full_like(along, o["across"]), along) if vertical else (along, np.full_like(along, o["across"]))
        # same rounding as place (np.round and Python's round both round half to even)
        return np.round(cy - o["side"] / 2).astype(int), np.round(cx - o["side"] / 2).astype(int)

    for _ in range(1000):
        side = int(round(size * rng.uniform(0.22, 0.3)))
        half = side / 2
        across = float(rng.uniform(half, size - half))
        if rng.random() < 0.5:  # moving like the base objects
            start, end = rng.uniform(half, 0.3 * size), rng.uniform(0.7 * size, size - half)
            if spec["direction"] in ("left", "up"):
                start, end = size - start, size - end
        else:  # static: with 2-3 objects in lanes across the whole frame, often the only free place
            start = end = rng.uniform(half, size - half)
        length = int(rng.integers(min_len, max_len + 1))
        first = int(rng.integers(0, n - length + 1))
        event = {"shape": shape, "colour": colour, "side": side, "across": across, "start": float(start),
                 "end": float(end), "first_frame": first, "last_frame": first + length}
        frames = np.arange(first, first + length)
        top, left = boxes(event, frames)
        clear = True
        for o in spec["objects"]:
            o_top, o_left = boxes(o, frames)
            apart = ((top + side + margin <= o_top) | (o_top + o["side"] + margin <= top)
                     | (left + side + margin <= o_left) | (o_left + o["side"] + margin <= left))
            if not apart.all():
                clear = False
                break
        if clear:
            return event
    return None


class _TrackRecorder:
    """Per-frame boxes (and masks) of chosen objects, read from the renderer's label maps."""

    def __init__(self, size: int, with_masks: set[int], boxes_only: set[int]):
        self.size = size
        self.labels = sorted(with_masks | boxes_only)
        self.with_masks = with_masks
        self.boxes: dict[int, list[Any]] = {k: [] for k in self.labels}
        self.masks: dict[int, list[Any]] = {k: [] for k in with_masks}

    def frames(self, rendered: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterable[np.ndarray]:
        from lrc.data.rle import encode

        for frame, labels in rendered:
            for k in self.labels:
                mask = labels == k
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                if rows.size == 0:
                    self.boxes[k].append(None)
                    if k in self.with_masks:
                        self.masks[k].append(None)
                    continue
                h, w = mask.shape
                # pixel-edge box: the object covers columns cols[0]..cols[-1] inclusive
                self.boxes[k].append([round(cols[0] / w, 4), round(rows[0] / h, 4),
                                      round((cols[-1] + 1) / w, 4), round((rows[-1] + 1) / h, 4)])
                if k in self.with_masks:
                    self.masks[k].append(encode(mask))
            yield frame

    def track(self, k: int, masks: bool) -> dict[str, Any]:
        return {"boxes": self.boxes[k], "masks": self.masks[k]} if masks else {"boxes": self.boxes[k]}


def parse_tasks(tasks: Sequence[str] | str) -> tuple[str, ...]:
    """``("mcq", "temporal")`` or ``"mcq,temporal"`` -> the tasks in :data:`TASKS` order; ValueError if unknown."""
    if isinstance(tasks, str):  # "mcq,temporal" (the CLI's and a config's spelling)
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"synthesize: tasks must be a non-empty subset of {TASKS}, got {tasks!r}"
                         + (f" (unknown: {unknown})" if unknown else ""))
    return tuple(t for t in TASKS if t in tasks)


# ---------------------------------------------------------------------------------------------------
# The corpus


def synthesize(
    out_dir: str | os.PathLike,
    videos: int = 60,
    seed: int = 0,
    val_fraction: float = 0.2,
    size: int = 64,
    min_seconds: float = 3.0,
    max_seconds: float = 180.0,
    answer_style: str = DataConfig.synth_answer_style,
    multi_turn_train: bool = DataConfig.synth_multi_turn_train,
    tasks: Sequence[str] | str = tuple(DataConfig().synth_tasks),
    format: str = "lrc",
    images: int = 0,
    frame_folders: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write the synthetic corpus into ``out_dir``; returns ``{"videos", "train", "val", "out_dir"}``.
    ``progress``: a bar over the videos on stderr; None shows it when stderr is a terminal.

    ``train``/``val`` count records (4 questions per video by default). ``train.jsonl`` is written
    last, so a run interrupted part-way leaves no corpus that looks complete.

    ``tasks``: a subset of :data:`TASKS` (or ``"mcq,temporal"``). ``mcq`` writes the four questions per
    video; the TPO tasks add, per video, a ``temporal`` record (when is an extra *event* object
    visible), ``region`` records (where is an object in FrameK, and an MCQ about the object inside an
    input box), a ``mask`` record (track an object) and a ``preference`` record (an MCQ with a chosen
    and a rejected answer); docs/data.md shows each. Region and mask records need per-frame tracks and
    are written for videos up to ``TRACK_MAX_SECONDS`` only. The TPO draws come from their own random
    streams, so the default (``("mcq",)``) corpus is byte for byte the one earlier versions wrote and,
    with TPO tasks, the videos' objects, paths and questions stay the same (an event video only gains
    its event object and words its count question as ``COUNT_QUESTION_WITH_EVENT``).

    ``format``: the annotation format of the files (lrc/data/formats/): ``lrc`` (``train.jsonl``), ``llava``
    (``train.json``, a JSON array, ``<image>`` as the video's placeholder as LLaVA-Video-178K writes it) or
    ``sharegpt`` (``train.jsonl`` with ``messages`` and ``videos``). ``images``: also write that many still
    images (``images/``) with colour, shape and count questions, and one two-image question per pair of
    images, to ``train_images`` / ``val_images`` (a source of their own in a mixture). ``frame_folders``: that
    many of the videos are written as folders of PNG frames (their records give the fps) instead of MP4.
    Images and frame folders draw from random streams of their own: the videos' questions stay the same.
    """
    if videos < 1:
        raise ValueError(f"synthesize: videos must be >= 1, got {videos}")
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"synthesize: answer_style must be one of {ANSWER_STYLES}, got {answer_style!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"synthesize: val_fraction must be in [0, 1), got {val_fraction}")
    if format not in ANNOTATION_FORMATS:
        raise ValueError(f"synthesize: format must be one of {ANNOTATION_FORMATS}, got {format!r}")
    if images < 0 or frame_folders < 0 or frame_folders > videos:
        raise ValueError(f"synthesize: need images >= 0 and 0 <= frame_folders <= videos, got {images} and "
                         f"{frame_folders}")
    if size < 16 or size % 2:
        raise ValueError(f"synthesize: size must be an even number of pixels >= 16 (yuv420p), got {size}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"synthesize: need 0 < min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")
    tasks = parse_tasks(tasks)
    tpo = tasks != ("mcq",)

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    codec = video_codec()

    # Split by video, so no video is seen in training and validation.
    num_val = int(round(val_fraction * videos))
    if videos >= 2:
        num_val = min(max(num_val, 1), videos - 1)
    split_rng = np.random.default_rng([seed, 1])
    val_videos = set(int(i) for i in split_rng.permutation(videos)[:num_val])
    decks = {"train": AnswerDeck(np.random.default_rng([seed, 2])),
             "val": AnswerDeck(np.random.default_rng([seed, 3]))}
    # the region-colour MCQs have decks of their own: the base questions' answers stay put
    tpo_decks = {"train": AnswerDeck(np.random.default_rng([seed, 4])),
                 "val": AnswerDeck(np.random.default_rng([seed, 5]))}

    records: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    folders = set(int(i) for i in np.random.default_rng([seed, 6]).permutation(videos)[:frame_folders])
    total_frames = 0
    events = 0
    # needle haystacks are videos of their own (lrc/data/synth/needle.py); a needle-only corpus has no base videos
    from tqdm import tqdm

    base_videos = range(videos if set(tasks) - {"needle"} else 0)
    for i in tqdm(base_videos, desc="lrc data synth", unit="video", file=sys.stderr, dynamic_ncols=True,
                  disable=None if progress is None else not progress):
        rng = np.random.default_rng([seed, 100, i])  # video i depends on (seed, i) only
        spec = video_spec(rng, size, min_seconds, max_seconds)
        name = f"synth-{i:06d}"
        split = "val" if i in val_videos else "train"
        objects = [{"shape": o["shape"], "colour": o["colour"], "direction": spec["direction"]}
                   for o in spec["objects"]]
        questions = _questions(spec, rng, decks[split], answer_style)
        common = {"video": f"videos/{name}" if i in folders else f"videos/{name}.mp4",
                  "duration": round(spec["num_frames"] / spec["fps"], 4), "fps": float(spec["fps"])}

        # TPO extras, each task from its own stream (seed, 300 + task, i)
        tpo_records: list[dict[str, Any]] = []
        recorder = None
        if "temporal" in tasks:
            named_shape = questions["colour"][0].split("What colour is the ", 1)[1].split("?", 1)[0]
            spec["event"] = _event(spec, size, np.random.default_rng([seed, 300, i]), avoid_shape=named_shape)
            if spec["event"]:
                events += 1
                text, options, answer = questions["count"]
                questions["count"] = (text.replace(COUNT_QUESTION, COUNT_QUESTION_WITH_EVENT), options, answer)
                ev = spec["event"]
                span = [round(ev["first_frame"] / spec["fps"], 4), round(ev["last_frame"] / spec["fps"], 4)]
                tpo_records.append({
                    "id": f"{name}-temporal", **common, "task": "temporal", "question_type": "temporal",
                    "conversations": [
                        {"from": "human", "value": f"<video>\nWhen is the {ev['colour']} {ev['shape']} visible?"},
                        {"from": "gpt", "value": "<temp>"}],
                    "spans": [span], "objects": objects})
        tracked = spec["num_frames"] / spec["fps"] <= TRACK_MAX_SECONDS
        if tracked and ("region" in tasks or "mask" in tasks):
            region_rng = np.random.default_rng([seed, 301, i])
            mask_rng = np.random.default_rng([seed, 302, i])
            count = len(spec["objects"])
            where = (int(region_rng.integers(count)), int(region_rng.integers(1, REGION_FRAMES + 1)))
            which = (int(region_rng.integers(count)), int(region_rng.integers(1, REGION_FRAMES + 1)))
            tracked_obj = int(mask_rng.integers(count))
            recorder = _TrackRecorder(size, with_masks={tracked_obj} if "mask" in tasks else set(),
                                      boxes_only={where[0], which[0]} if "region" in tasks else set())

        if recorder is None:
            frames = render(spec, size)
        else:
            frames = recorder.frames(render_with_labels(spec, size))
        if i in folders:
            _write_frame_folder(frames, out / "videos" / name)
        else:
            encode_video(frames, out / "videos" / f"{name}.mp4", spec["fps"], size, codec)
        total_frames += spec["num_frames"]

        if recorder is not None and "region" in tasks:
            o, k = spec["objects"][where[0]], where[1]
            tpo_records.append({
                "id": f"{name}-region", **common, "task": "region", "question_type": "region",
                "conversations": [
                    {"from": "human", "value": f"<video>\nWhere is the {o['colour']} {o['shape']} in Frame{k}?"},
                    {"from": "gpt", "value": "<box>"}],
                "frame": k, "track": recorder.track(where[0], masks=False), "objects": objects})
            # the region encoder's input: a box in the question (<region>), computed from the track at
            # the sampled frame k by lrc.data.tasks.task_targets (the frame is only known after sampling)
            o, k = spec["objects"][which[0]], which[1]
            wrong = [str(c) for c in region_rng.choice([c for c in PALETTE if c != o["colour"]], size=3, replace=False)]
            text, options, answer = mcq(f"What colour is the object at <region> in Frame{k}?", o["colour"], wrong,
                                         tpo_decks[split].draw("region_colour", 4), region_rng, answer_style)
            tpo_records.append({
                "id": f"{name}-region_colour", **common, "task": "mcq", "question_type": "region_colour",
                "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
                "options": options, "answer": answer,
                "frame": k, "track": recorder.track(which[0], masks=False), "objects": objects})
        if recorder is not None and "mask" in tasks:
            o = spec["objects"][tracked_obj]
            tpo_records.append({
                "id": f"{name}-mask", **common, "task": "mask", "question_type": "mask",
                "conversations": [{"from": "human", "value": f"<video>\nTrack the {o['colour']} {o['shape']}."},
                                  {"from": "gpt", "value": "<track>"}],
                "track": recorder.track(tracked_obj, masks=True), "objects": objects})
        if "preference" in tasks:
            pref_rng = np.random.default_rng([seed, 303, i])
            qtype = str(pref_rng.choice(QUESTION_TYPES))
            text, options, answer = questions[qtype]
            rejected = str(pref_rng.choice([opt for opt in options if opt != answer]))
            tpo_records.append({
                "id": f"{name}-preference", **common, "task": "preference", "question_type": "preference",
                "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
                "rejected": rejected, "objects": objects})

        if "mcq" in tasks and split == "train" and multi_turn_train:
            # one conversation per video, every question a turn: one video decode and one forward
            # teach all four answers (LLaVA-style multi-turn data)
            # the question order is shuffled per video: evaluation asks each question straight after
            # the video, so every type must also be learnt as a first turn
            order = np.random.default_rng([seed, 200, i]).permutation(len(questions))
            turns = []
            for j, (text, _, answer) in enumerate(list(questions.values())[k] for k in order):
                turns += [{"from": "human", "value": text if j == 0 else text.replace("<video>\n", "")},
                          {"from": "gpt", "value": answer}]
            records[split].append({"id": name, **common, "task": "chat", "question_type": "multi_turn",
                                   "conversations": turns, "objects": objects})
        elif "mcq" in tasks:
            for qtype, (text, options, answer) in questions.items():
                records[split].append({
                    "id": f"{name}-{qtype}",
                    **common,
                    "task": "mcq",
                    "question_type": qtype,
                    "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
                    "options": options,
                    "answer": answer,
                    "objects": objects,
                })
        records[split] += tpo_records
    if "needle" in tasks:  # `videos` short needle-in-a-haystack videos (paper Fig. 3; lrc/commands/niah.py)
        from lrc.data.synth.needle import training_records

        for split, found in training_records(out, videos, seed, size, answer_style, val_fraction).items():
            records[split] += found

    image_records = _image_records(out, images, seed, size, val_fraction, answer_style) if images else {}
    all_records = records["train"] + records["val"]
    texts = _corpus_texts(all_records + [r for split in image_records.values() for r in split])
    _build_tokenizer(texts, out / "tokenizer", extra_texts=IMAGE_PROMPT_TEXTS if images else ())
    qtype_counts = {q: sum(r["question_type"] == q for r in all_records) for q in QUESTION_TYPES}
    meta = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "videos": videos,
        "train_videos": videos - len(val_videos),
        "val_videos": len(val_videos),
        "train_records": len(records["train"]),
        "val_records": len(records["val"]),
        "question_types": qtype_counts,
        "size": size,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "val_fraction": val_fraction,
        "answer_style": answer_style,
        "multi_turn_train": multi_turn_train,
        "codec": codec,
        "total_frames": total_frames,
        "colours": list(PALETTE),
        "shapes": list(SHAPES),
    }
    if tpo:  # absent from an MCQ-only corpus's meta.json, which stays as earlier versions wrote it
        meta["tasks"] = list(tasks)
        meta["task_records"] = {task: sum(r["task"] == task for r in all_records)
                                for task in ("chat",) + TASKS if any(r["task"] == task for r in all_records)}
        meta["tpo_question_types"] = {q: sum(r["question_type"] == q for r in all_records)
                                      for q in ("temporal", "region", "region_colour", "mask", "preference")}
        meta["event_videos"] = events
        meta["track_max_seconds"] = TRACK_MAX_SECONDS
    if "needle" in tasks:
        meta["needle_question_types"] = {q: sum(r["question_type"] == q for r in all_records)
                                         for q in ("needle_single", "needle_multi")}
    ext = ".json" if format == "llava" else ".jsonl"
    if format != "lrc" or images or frame_folders:  # absent from a default corpus's meta.json, as earlier versions
        meta["format"] = format
        meta["files"] = {split: f"{split}{ext}" for split in ("train", "val")}
        meta["frame_folders"] = sorted(f"videos/synth-{i:06d}" for i in folders)
        if images:
            meta["images"] = images
            meta["files"].update({f"{split}_images": f"{split}_images{ext}" for split in ("train", "val")})
            meta["image_records"] = {split: len(found) for split, found in image_records.items()}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for split, found in image_records.items():
        _write_records(found, out / f"{split}_images{ext}", format)
    for split in ("val", "train"):  # train last: its presence marks a complete corpus (lrc.train.run)
        _write_records(records[split], out / f"{split}{ext}", format)
    summary = {"videos": videos, "train": len(records["train"]), "val": len(records["val"]), "out_dir": str(out)}
    if images:
        summary.update(train_images=len(image_records["train"]), val_images=len(image_records["val"]))
    return summary


def _write_records(rows: list[dict[str, Any]], path: Path, format: str) -> None:
    """Records (lrc's schema) as an annotation file of ``format``, written to a temporary file and renamed."""
    if format == "lrc":
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in rows:
                fh.write(json.dumps(rec) + "\n")
        os.replace(tmp, path)
        return
    from lrc.data.annotations import AnnotationError, check_record
    from lrc.data.formats import FORMATS

    module = FORMATS[format]
    problems: list[str] = []
    converted = []
    for n, row in enumerate(rows):
        rec = check_record(row, f"{path.name}[{n}]", problems)
        if rec is None:
            raise AnnotationError("synthesize wrote a record outside lrc's schema: " + "; ".join(problems))
        converted.append(module.from_record(rec, [p.as_posix() for p in rec.media]))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        if path.suffix == ".json":
            fh.write("[\n" + ",\n".join(json.dumps(row) for row in converted) + "\n]\n")
        else:
            for row in converted:
                fh.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def _write_frame_folder(frames: Iterable[np.ndarray], folder: Path) -> None:
    """A video as a folder of PNG frames, 000000.png, 000001.png ..."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        Image.fromarray(np.ascontiguousarray(frame)).save(folder / f"{k:06d}.png")


def _image_records(out: Path, count: int, seed: int, size: int, val_fraction: float,
                   answer_style: str) -> dict[str, list[dict[str, Any]]]:
    """``count`` still images (one frame of a scene: 1-3 shapes on a dark background) with three MCQs each
    (colour, shape, count) and, per pair of consecutive images of a split, a two-image MCQ (the colour of a
    shape in the second image). Random streams (seed, 400...) of their own."""
    from PIL import Image

    (out / "images").mkdir(parents=True, exist_ok=True)
    num_val = min(max(int(round(val_fraction * count)), 1), count - 1) if count >= 2 else 0
    val = set(int(i) for i in np.random.default_rng([seed, 401]).permutation(count)[:num_val])
    decks = {"train": AnswerDeck(np.random.default_rng([seed, 402])),
             "val": AnswerDeck(np.random.default_rng([seed, 403]))}
    found: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    last: dict[str, tuple[str, dict[str, Any]] | None] = {"train": None, "val": None}
    for j in range(count):
        rng = np.random.default_rng([seed, 400, j])
        spec = video_spec(rng, size, 1.0, 1.0)
        frame = next(iter(render(spec, size)))
        name = f"image-{j:06d}"
        Image.fromarray(np.ascontiguousarray(frame)).save(out / "images" / f"{name}.png")
        split = "val" if j in val else "train"
        questions = _questions(spec, rng, decks[split], answer_style)
        objects = [{"shape": o["shape"], "colour": o["colour"]} for o in spec["objects"]]
        for qtype in ("colour", "shape", "count"):
            text, options, answer = questions[qtype]
            text = text.replace("<video>", "<image>").replace(COUNT_QUESTION, IMAGE_COUNT_QUESTION)
            found[split].append({"id": f"{name}-{qtype}", "image": f"images/{name}.png", "task": "mcq",
                                 "question_type": f"image_{qtype}",
                                 "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
                                 "options": options, "answer": answer, "objects": objects})
        if last[split] is None:
            last[split] = (name, questions)
            continue
        first, _ = last[split]
        last[split] = None
        text, options, answer = questions["colour"]
        shape = text.split("What colour is the ", 1)[1].split("?", 1)[0]
        text = text.replace("<video>\n", "<image>\n<image>\n").replace(
            f"What colour is the {shape}?", f"What colour is the {shape} in the second image?")
        found[split].append({"id": f"{first}-{name}-pair", "images": [f"images/{first}.png", f"images/{name}.png"],
                             "task": "mcq", "question_type": "image_pair",
                             "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": answer}],
                             "options": options, "answer": answer})
    return found


# ---------------------------------------------------------------------------------------------------
# Tokenizer


def _corpus_texts(records: Iterable[dict[str, Any]]) -> list[str]:
    texts = []
    for rec in records:
        texts += [turn["value"] for turn in rec.get("conversations", [])]
        if isinstance(rec.get("rejected"), str):  # a preference record's losing answer
            texts.append(rec["rejected"])
    return texts


def _build_tokenizer(texts: Iterable[str], save_dir: Path, extra_texts: Sequence[str] = ()) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated")
    texts = list(texts)
    # TPO task tokens only where the corpus uses them, appended after every other token: an MCQ-only
    # corpus keeps the vocabulary (and token ids) earlier versions built
    task_tokens = list(TASK_TOKENS) if any(t in text for text in texts for t in TASK_TOKENS) else []
    specials = set(SPECIAL_TOKENS) | set(TASK_TOKENS)
    words: set[str] = set()
    extra = list(PROMPT_TEXTS) + list(extra_texts) + list(string.ascii_uppercase) + list(string.digits)
    for text in texts + extra:
        # special tokens are matched before pre-tokenisation; drop them from the word list
        for token in specials:
            text = text.replace(token, " ")
        for piece, _ in split.pre_tokenize_str(text):
            if not piece.isspace():
                words.add(piece.lstrip(" "))
    # every word both at the start of a line and after a space
    pieces = sorted(words | {" " + w for w in words})
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + [" ", "\n", "\t"] + pieces + task_tokens)}

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = split
    tok.decoder = decoders.Fuse()  # pieces carry their own spaces: concatenating them is exact
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=list(SPECIAL_TOKENS[4:]) + task_tokens,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(save_dir))
    return fast


def build_corpus_tokenizer(out_dir: str | os.PathLike) -> Any:
    """Build the word-level tokenizer of a corpus folder and save it to ``out_dir/tokenizer``.

    The vocabulary is every word, digit and punctuation mark in the conversations of the folder's
    ``*.jsonl`` files, plus the words lrc's prompt adds (time prefix, ``FrameN:``, role names) and the
    letters A-Z. Returns the ``transformers.PreTrainedTokenizerFast``.
    """
    out = Path(out_dir)
    files = sorted(out.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"build_corpus_tokenizer: no *.jsonl annotation files in {out}; "
                                "run `lrc data synth` there or point at a corpus folder")
    records = []
    for path in files:
        with path.open(encoding="utf-8") as fh:
            records += [json.loads(line) for line in fh if line.strip()]
    return _build_tokenizer(_corpus_texts(records), out / "tokenizer")
