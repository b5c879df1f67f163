"""``internvl2_5``: the chat template InternVL2.5 and InternVideo2.5 were released with.

InternVL's ``internvl2_5`` conversation template (MPT separator style) with the video laid out as the
released InternVideo2.5 chat example does it: one ``FrameN: <image>`` line per frame before the question,
each ``<image>`` replaced by ``<img>`` + the frame's ``<IMG_CONTEXT>`` slots + ``</img>``, and the prompt
tokenized with the tokenizer's own special tokens (InternLM2's ``<s>``):

    <s><|im_start|>system
    你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。<|im_end|>
    <|im_start|>user
    Frame1: <img><IMG_CONTEXT> × k</img>
    Frame2: <img><IMG_CONTEXT> × k</img>
    Describe this video.<|im_end|>
    <|im_start|>assistant
    ...<|im_end|>

No time prefix (the released example has none). ``layout: finetune`` is instead the layout InternVideo2.5's
finetuning code (VideoChat-Flash's xtuner-train_internvideo2_5) trains with: VideoChat-Flash's time prefix
line, then the ``FrameN: <img>…</img>`` lines, and the question right after the last frame's ``</img>``.
``model.init`` of an InternVL2.5 / InternVideo2.5 folder sets this format when ``model.prompt`` is left
null (lrc/weights/pretrained.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lrc.constraints import Text
from lrc.data.prompt import IM_END, IM_START, TIME_PREFIX
from lrc.registry import PROMPTS

# the system message of InternVL's internvl2_5 template, as released
SYSTEM_MESSAGE = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
IMG_START, IMG_END = "<img>", "</img>"
LAYOUTS = ("chat", "finetune")


@PROMPTS.register("internvl2_5")
class InternVL25:
    """InternVL2.5 / InternVideo2.5's template: the tokenizer's BOS, a system turn, ``<|im_start|>user`` ...
    ``<|im_end|>`` turns, each frame as ``FrameN: <img>`` + its slots + ``</img>``.

    Args:
        system: the system turn's text (default: InternVL's system message, the one the models were trained with).
        layout: ``chat``: the released chat example (frame lines, a newline, the question); ``finetune``:
            InternVideo2.5's finetuning code (the time prefix line first, the question right after the last ``</img>``).
    """

    special_tokens: tuple[str, ...] = (IMG_START, IMG_END)
    turn_end = IM_END
    bos = True

    def __init__(self, system: Annotated[str, Text("a system message")] = SYSTEM_MESSAGE,
                 layout: Literal[LAYOUTS] = "chat"):
        """``system``: the system message (InternVL's, in Chinese, by default; the models were trained with it).
        ``layout``: ``chat`` (the released chat example) or ``finetune`` (InternVideo2.5's finetuning code)."""
        self.system_message = system
        self.layout = layout

    def system(self) -> str:
        return f"{IM_START}system\n{self.system_message}{IM_END}\n"

    def turn_start(self, role: str) -> str:
        return f"{IM_START}{role}\n"

    def turn_separator(self) -> str:
        return "\n"

    def video(self, duration: float, num_frames: int) -> list[str]:
        first, last = f"Frame1: {IMG_START}", f"{IMG_END}\n"
        if self.layout == "finetune":
            first = TIME_PREFIX.format(duration=duration, num_frames=num_frames) + "\n" + first
            last = IMG_END
        return [first] + [f"{IMG_END}\nFrame{i}: {IMG_START}" for i in range(2, num_frames + 1)] + [last]
