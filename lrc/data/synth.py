"""The built-in synthetic corpus: real MP4 files of moving coloured shapes, with multiple-choice QA.

    synthesize("data/synth", videos=60, seed=0)

writes

    data/synth/videos/synth-000000.mp4 ...   H.264 (MPEG-4 Part 2 if libx264 is missing), yuv420p
    data/synth/train.jsonl, val.jsonl          LLaVA-style conversations, split by video
    data/synth/tokenizer/                      a word-level tokenizer covering every corpus text
    data/synth/meta.json                       seed, counts, generator version

so the whole pipeline (decode -> sample -> encode -> compress -> LLM -> score) runs offline on a CPU
with no download (DESIGN.md, "Data"). Each video shows 1-3 large shapes of distinct colours on a dark
background, all moving monotonically in one direction across the frame, so that four questions have
one right answer a tiny model can learn from a few sampled frames:

    colour     "What colour is the circle?"                   (a shape present exactly once)
    shape      "What shape is the green object?"              (colours are distinct within a video)
    direction  "In which direction do the objects move?"     (left / right / up / down)
    count      "How many objects are in the video?"           (1 / 2 / 3)

Durations range from a few seconds to a few minutes (most are short), so samplers see long videos
too; long videos use low frame rates to keep the files small. Everything is deterministic in ``seed``:
video ``i`` depends only on ``(seed, i)``, so a larger corpus starts with the same videos.
"""

from __future__ import annotations

import json
import os
import string
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

import numpy as np

GENERATOR_VERSION = "lrc.data.synth/1"

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
QUESTION_TYPES = ("colour", "shape", "direction", "count")
LETTERS = string.ascii_uppercase
ANSWER_SUFFIX = "Answer with the option's letter from the given choices directly."
TEXT_ANSWER_SUFFIX = "Answer with one of the options."
ANSWER_STYLES = ("letter", "text")

# Fixed vocabulary lrc's prompt adds around the corpus text (lrc/prompt.py): the time prefix, the
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


# ---------------------------------------------------------------------------------------------------
# One video: what is in it


def _video_spec(rng: np.random.Generator, size: int, min_seconds: float, max_seconds: float) -> dict[str, Any]:
    """Draw duration, fps, objects and their straight-line paths for one video."""
    short_max = min(20.0, max_seconds)
    if rng.random() < 0.8 or max_seconds <= short_max:
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


def _mask(shape: str, side: int) -> np.ndarray:
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


def _render(spec: dict[str, Any], size: int) -> Iterable[np.ndarray]:
    """Yield the frames (uint8 [size, size, 3] RGB) of one video."""
    n = spec["num_frames"]
    vertical = spec["direction"] in ("up", "down")
    sprites = [(_mask(o["shape"], o["side"]), np.array(PALETTE[o["colour"]], dtype=np.uint8), o)
               for o in spec["objects"]]
    for f in range(n):
        frame = np.full((size, size, 3), spec["background"], dtype=np.uint8)
        t = f / (n - 1)
        for mask, colour, o in sprites:
            along = o["start"] + (o["end"] - o["start"]) * t
            cx, cy = (o["across"], along) if vertical else (along, o["across"])
            top, left = int(round(cy - o["side"] / 2)), int(round(cx - o["side"] / 2))
            side = o["side"]
            # paths keep objects inside the frame; clipping only guards rounding at the border
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + side, size), min(left + side, size)
            region = frame[y0:y1, x0:x1]
            region[mask[y0 - top:y1 - top, x0 - left:x1 - left]] = colour
        yield frame


def _codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _encode(frames: Iterable[np.ndarray], path: Path, fps: int, size: int, codec: str) -> None:
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


class _AnswerDeck:
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


def _mcq(question: str, correct: str, distractors: list[str], position: int,
         rng: np.random.Generator, answer_style: str = "letter") -> tuple[str, list[str], str]:
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


def _questions(spec: dict[str, Any], rng: np.random.Generator, deck: _AnswerDeck,
               answer_style: str = "letter") -> dict[str, tuple[str, list[str], str]]:
    """The four MCQs of one video: question type -> (human text, option letters, answer letter)."""
    objects = spec["objects"]
    shapes = [o["shape"] for o in objects]
    questions = {}

    # colour: name a shape that occurs once; distractors are other palette colours
    named = rng.choice([o for o in objects if shapes.count(o["shape"]) == 1])
    wrong = [str(c) for c in rng.choice([c for c in PALETTE if c != named["colour"]], size=3, replace=False)]
    questions["colour"] = _mcq(f"What colour is the {named['shape']}?", named["colour"], wrong,
                               deck.draw("colour", 4), rng, answer_style)

    # shape: name a colour (colours are distinct within a video); all three shapes are options
    named = rng.choice(objects)
    wrong = [s for s in SHAPES if s != named["shape"]]
    questions["shape"] = _mcq(f"What shape is the {named['colour']} object?", named["shape"], wrong,
                              deck.draw("shape", 3), rng, answer_style)

    question = ("In which direction do the objects move?" if len(objects) > 1
                else "In which direction does the object move?")
    wrong = [d for d in DIRECTIONS if d != spec["direction"]]
    questions["direction"] = _mcq(question, spec["direction"], wrong, deck.draw("direction", 4), rng, answer_style)

    wrong = [str(c) for c in (1, 2, 3) if c != len(objects)]
    questions["count"] = _mcq("How many objects are in the video?", str(len(objects)), wrong,
                              deck.draw("count", 3), rng, answer_style)
    return questions


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
    answer_style: str = "letter",
    multi_turn_train: bool = False,
) -> dict[str, Any]:
    """Write the synthetic corpus into ``out_dir``; returns ``{"videos", "train", "val", "out_dir"}``.

    ``train``/``val`` count question records (4 per video). ``train.jsonl`` is written last, so a run
    interrupted part-way leaves no corpus that looks complete.
    """
    if videos < 1:
        raise ValueError(f"synthesize: videos must be >= 1, got {videos}")
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"synthesize: answer_style must be one of {ANSWER_STYLES}, got {answer_style!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"synthesize: val_fraction must be in [0, 1), got {val_fraction}")
    if size < 16 or size % 2:
        raise ValueError(f"synthesize: size must be an even number of pixels >= 16 (yuv420p), got {size}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"synthesize: need 0 < min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    codec = _codec()

    # Split by video, so no video is seen in training and validation.
    num_val = int(round(val_fraction * videos))
    if videos >= 2:
        num_val = min(max(num_val, 1), videos - 1)
    split_rng = np.random.default_rng([seed, 1])
    val_videos = set(int(i) for i in split_rng.permutation(videos)[:num_val])
    decks = {"train": _AnswerDeck(np.random.default_rng([seed, 2])),
             "val": _AnswerDeck(np.random.default_rng([seed, 3]))}

    records: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    total_frames = 0
    for i in range(videos):
        rng = np.random.default_rng([seed, 100, i])  # video i depends on (seed, i) only
        spec = _video_spec(rng, size, min_seconds, max_seconds)
        name = f"synth-{i:06d}"
        _encode(_render(spec, size), out / "videos" / f"{name}.mp4", spec["fps"], size, codec)
        total_frames += spec["num_frames"]

        split = "val" if i in val_videos else "train"
        objects = [{"shape": o["shape"], "colour": o["colour"], "direction": spec["direction"]}
                   for o in spec["objects"]]
        questions = _questions(spec, rng, decks[split], answer_style)
        common = {"video": f"videos/{name}.mp4", "duration": round(spec["num_frames"] / spec["fps"], 4),
                  "fps": float(spec["fps"])}
        if split == "train" and multi_turn_train:
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
            continue
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

    all_records = records["train"] + records["val"]
    _build_tokenizer(_corpus_texts(all_records), out / "tokenizer")
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
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for split in ("val", "train"):  # train last: its presence marks a complete corpus (lrc.run)
        tmp = out / f"{split}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in records[split]:
                fh.write(json.dumps(rec) + "\n")
        os.replace(tmp, out / f"{split}.jsonl")
    return {"videos": videos, "train": len(records["train"]), "val": len(records["val"]), "out_dir": str(out)}


# ---------------------------------------------------------------------------------------------------
# Tokenizer


def _corpus_texts(records: Iterable[dict[str, Any]]) -> list[str]:
    return [turn["value"] for rec in records for turn in rec.get("conversations", [])]


def _build_tokenizer(texts: Iterable[str], save_dir: Path) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated")
    specials = set(SPECIAL_TOKENS)
    words: set[str] = set()
    extra = list(PROMPT_TEXTS) + list(string.ascii_uppercase) + list(string.digits)
    for text in list(texts) + extra:
        # special tokens are matched before pre-tokenisation; drop them from the word list
        for token in specials:
            text = text.replace(token, " ")
        for piece, _ in split.pre_tokenize_str(text):
            if not piece.isspace():
                words.add(piece.lstrip(" "))
    # every word both at the start of a line and after a space
    pieces = sorted(words | {" " + w for w in words})
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + [" ", "\n", "\t"] + pieces)}

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = split
    tok.decoder = decoders.Fuse()  # pieces carry their own spaces: concatenating them is exact
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=list(SPECIAL_TOKENS[4:]),
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
