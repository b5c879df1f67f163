"""``lrc chat PATH --video V [--question Q]``: ask a video questions from the command line (docs/inference.md).

With ``--question`` it answers once; without, it reads questions from stdin until EOF, ``exit`` or ``quit``,
keeping the conversation (a REPL). After each answer it prints what the TPO heads found: spans (seconds,
with scores), boxes (normalised, with their frame) and, for masks, the PNG files it wrote (one per sampled
frame) under ``--masks`` (default ``lrc-chat-masks/``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

QUIT = {"exit", "quit", ":q"}


def describe(result: Any, masks_dir: Path, turn: int) -> list[str]:
    """The lines printed after an answer: spans, boxes, where the masks went."""
    lines = []
    for span in result.spans[:5]:
        lines.append(f"  span  {span.start:7.2f} s - {span.end:7.2f} s   score {span.score:.2f}")
    for box in result.boxes:
        where = f"frame {box.frame} ({box.time:.2f} s)" if box.frame is not None else "the frame asked about"
        lines.append(f"  box   [{', '.join(f'{v:.3f}' for v in box.xyxy)}]  {where}")
    if result.masks is not None:
        folder = masks_dir / f"turn{turn}"
        paths = result.masks.save_png(folder)
        lines.append(f"  masks {len(paths)} PNG(s) in {folder} ({result.masks.array.shape[2]}x{result.masks.array.shape[1]})")
    return lines


def run(path: str, video: str, question: str | None = None, *, num_frames: int | None = None,
        max_new_tokens: int = 256, masks: str = "lrc-chat-masks", sample: bool = False, temperature: float = 1.0,
        top_p: float = 1.0, seed: int | None = None, device: str = "auto", dtype: str | None = None,
        overrides: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    from lrc.inference.loading import load

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    chat = load(path, device=device, dtype=dtype, overrides=overrides or [])
    options = dict(max_new_tokens=max_new_tokens, num_frames=num_frames, do_sample=sample, temperature=temperature,
                   top_p=top_p, seed=seed)
    masks_dir = Path(masks)
    if question is not None:
        result = chat.chat(video, question, **options)
        print(result.text, file=stdout)
        for extra in describe(result, masks_dir, 1):
            print(extra, file=stdout)
        return 0
    print(f"{chat}\nAsk about {video} (an empty line, EOF, `exit` or `quit` ends the chat).", file=stdout)
    history: list[tuple[str, str]] = []
    turn = 0
    while True:
        print("> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line or line.strip() in QUIT or not line.strip():
            return 0
        turn += 1
        result = chat.chat(video, line.strip(), history, **options)
        history = result.history
        print(result.text, file=stdout)
        for extra in describe(result, masks_dir, turn):
            print(extra, file=stdout)
