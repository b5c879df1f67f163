"""Scenes of the synthetic corpus: what one video shows, how it is drawn, encoded and asked about.

Shared by the corpus (lrc/data/synth/corpus.py) and the needle-in-a-haystack videos
(lrc/data/synth/needle.py): a video *spec* (duration, fps, objects and their straight-line paths), its
frames rendered with numpy (optionally with per-object label maps for masks and boxes), the MP4
encoding, and the multiple-choice question format with balanced answer positions.
"""

from __future__ import annotations

import os
import string
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import numpy as np

# Saturated colours far apart in RGB, so they stay distinguishable after yuv420p chroma subsampling
# and lossy coding at 64 px.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 230, 30),
    "magenta": (230, 40, 230),
    "cyan": (30, 220, 230),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
FPS_CHOICES = (4, 6, 8, 10, 15)
LETTERS = string.ascii_uppercase
ANSWER_SUFFIX = "Answer with the option's letter from the given choices directly."
TEXT_ANSWER_SUFFIX = "Answer with one of the options."

# ---------------------------------------------------------------------------------------------------
# One video: what is in it


def video_spec(rng: np.random.Generator, size: int, min_seconds: float, max_seconds: float) -> dict[str, Any]:
    """Draw duration, fps, objects and their straight-line paths for one video."""
    short_max = min(20.0, max_seconds)
    if min_seconds > short_max:  # only long videos asked for: log-uniform over the whole range
        seconds = float(np.exp(rng.uniform(np.log(min_seconds), np.log(max_seconds))))
    elif rng.random() < 0.8 or max_seconds <= short_max:
        seconds = rng.uniform(min_seconds, short_max)
    else:
        # long tail: log-uniform between 20 s and max_seconds, so minutes-long videos occur
        seconds = float(np.exp(rng.uniform(np.log(short_max), np.log(max_seconds))))
    # low frame rates for long videos keep files small (and decoding quick)
    fps_choices = FPS_CHOICES if seconds <= 20 else (4, 6, 8) if seconds <= 60 else (4, 6)
    fps = int(rng.choice(fps_choices))
    num_frames = max(2, int(round(seconds * fps)))

    count = int(rng.integers(1, 4))
    colours = [str(c) for c in rng.choice(list(PALETTE), size=count, replace=False)]
    # Shapes may repeat (so counting is not shape-counting), but one must be unique for the colour
    # question to name it unambiguously.
    while True:
        shapes = [str(s) for s in rng.choice(SHAPES, size=count)]
        if any(shapes.count(s) == 1 for s in shapes):
            break
    direction = str(rng.choice(DIRECTIONS))

    # Each object travels in its own lane across the motion axis, so objects never overlap; along
    # the axis it moves linearly from near one side to near the other over the whole video.
    objects = []
    lane = size / count
    for k in range(count):
        side = int(round(size * rng.uniform(0.25, 0.32)))
        half = side / 2
        slack = max(0.0, (lane - side) / 2)
        across = float(np.clip((k + 0.5) * lane + rng.uniform(-slack, slack), half, size - half))
        start = rng.uniform(half, 0.3 * size)
        end = rng.uniform(0.7 * size, size - half)
        if direction in ("left", "up"):  # decreasing x (left) or y (up: image rows grow downwards)
            start, end = size - start, size - end
        objects.append({"shape": shapes[k], "colour": colours[k], "side": side,
                        "across": across, "start": float(start), "end": float(end)})
    background = int(rng.integers(10, 40))
    return {"fps": fps, "num_frames": num_frames, "direction": direction, "objects": objects,
            "background": background}


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean sprite of a shape filling a side x side box."""
    y, x = np.mgrid[0:side, 0:side] + 0.5
    if shape == "circle":
        r = side / 2
        return (x - r) ** 2 + (y - r) ** 2 <= r * r
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "triangle":  # apex at the top, base along the bottom row
        half_width = (y / side) * (side / 2)
        return np.abs(x - side / 2) <= half_width
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def place(o: dict[str, Any], vertical: bool, t: float) -> tuple[int, int]:
    """Top-left pixel of object ``o``'s sprite at time ``t`` in [0, 1] of the video."""
    along = o["start"] + (o["end"] - o["start"]) * t
    cx, cy = (o["across"], along) if vertical else (along, o["across"])
    return int(round(cy - o["side"] / 2)), int(round(cx - o["side"] / 2))


def layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """What is drawn, bottom to top: the temporal event object (if any) under the base objects.

    Layer ``k < len(objects)`` is base object ``k``; the event is the last layer index."""
    layers = [{**o, "first_frame": 0, "last_frame": spec["num_frames"]} for o in spec["objects"]]
    if spec.get("event"):
        layers.append(spec["event"])
    order = ([len(layers) - 1] if spec.get("event") else []) + list(range(len(spec["objects"])))
    return [layers[k] | {"label": k} for k in order]


def render_with_labels(spec: dict[str, Any], size: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Yield each frame (uint8 [size, size, 3] RGB) with its label map (int8 [size, size]: the index
    of the object drawn at each pixel (base objects 0.., the event object last), -1 for background).

    The label map is what boxes and masks of the annotations are read from, so they match the pixels
    exactly (before lossy coding)."""
    n = spec["num_frames"]
    vertical = spec["direction"] in ("up", "down")
    sprites = [(shape_mask(o["shape"], o["side"]), np.array(PALETTE[o["colour"]], dtype=np.uint8), o)
               for o in layers(spec)]
    for f in range(n):
        frame = np.full((size, size, 3), spec["background"], dtype=np.uint8)
        labels = np.full((size, size), -1, dtype=np.int8)
        t = f / (n - 1)
        for mask, colour, o in sprites:
            if not o["first_frame"] <= f < o["last_frame"]:
                continue
            top, left = place(o, vertical, t)
            side = o["side"]
            # paths keep objects inside the frame; clipping only guards rounding at the border
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + side, size), min(left + side, size)
            drawn = mask[y0 - top:y1 - top, x0 - left:x1 - left]
            frame[y0:y1, x0:x1][drawn] = colour
            labels[y0:y1, x0:x1][drawn] = o["label"]
        yield frame, labels


def render(spec: dict[str, Any], size: int) -> Iterable[np.ndarray]:
    """Yield the frames (uint8 [size, size, 3] RGB) of one video."""
    for frame, _ in render_with_labels(spec, size):
        yield frame


def video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_video(frames: Iterable[np.ndarray], path: Path, fps: int, size: int, codec: str) -> None:
    """Write frames to an MP4 with a key frame every second (cheap seeking) and no B-frames."""
    import av

    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        if codec == "libx264":
            # one thread: x264's output then depends only on the input, so files are reproducible
            options = {"preset": "veryfast", "crf": "18", "threads": "1", "bf": "0"}
        else:
            options = {"qscale": "3", "threads": "1", "bf": "0"}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder
            container.mux(packet)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# Questions


class AnswerDeck:
    """Answer positions drawn from shuffled decks, one per question type, so that within a split each
    letter is the answer of a question type equally often (chance accuracy is then exactly 1/options,
    and a model cannot score by preferring a letter)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.decks: dict[str, list[int]] = {}

    def draw(self, question_type: str, num_options: int) -> int:
        deck = self.decks.setdefault(question_type, [])
        if not deck:
            deck.extend(int(i) for i in self.rng.permutation(num_options))
        return deck.pop()


def mcq(question: str, correct: str, distractors: list[str], position: int,
         rng: np.random.Generator, answer_style: str) -> tuple[str, list[str], str]:
    """Human prompt text, options and the answer, with the answer at ``position``.

    ``letter`` (benchmark style): options listed as "(A) red" lines, answered with the letter.
    ``text``: options listed inline, answered with the option's text. A letter answer asks a model
    to see the colour *and* look up which letter lists it; the text style drops the look-up, which a
    tiny model trained from scratch in minutes learns far sooner (the demo uses it).
    """
    others = [str(d) for d in rng.permutation(distractors)]
    choices = others[:position] + [correct] + others[position:]
    if answer_style == "text":
        text = "<video>\n" + question + "\nOptions: " + ", ".join(choices) + ".\n" + TEXT_ANSWER_SUFFIX
        return text, choices, correct
    letters = list(LETTERS[: len(choices)])
    lines = [f"({letter}) {choice}" for letter, choice in zip(letters, choices)]
    text = "<video>\n" + question + "\n" + "\n".join(lines) + "\n" + ANSWER_SUFFIX
    return text, letters, letters[position]
