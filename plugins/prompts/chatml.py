"""``chatml``: lrc's own prompt layout — ChatML turns and VideoChat-Flash's video text.

    <|im_start|>user
    The video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it.
    Frame1: <IMG_CONTEXT> × k
    ...
    Frame8: <IMG_CONTEXT> × k
    What colour is the square?<|im_end|>
    <|im_start|>assistant
    A<|im_end|>

No system turn unless ``system`` is given, no BOS. This is what every lrc run trained before prompt formats
were a plugin kind used, and what the demo corpus's tokenizer is built for.
"""

from __future__ import annotations

from typing import Annotated

from lrc.constraints import Text
from lrc.data.prompt import IM_END, IM_START, TIME_PREFIX
from lrc.registry import PROMPTS


@PROMPTS.register("chatml")
class ChatML:
    """ChatML turns; the video opens with "The video lasts for D seconds, and N frames are uniformly sampled from it."
    (VideoChat-Flash) and one ``FrameN:`` line per frame; no BOS.

    Args:
        system: a system turn's text (null: no system turn).
        time_prefix: open the video with the line that gives its duration and frame count.
    """

    special_tokens: tuple[str, ...] = ()
    turn_end = IM_END
    bos = False

    def __init__(self, system: Annotated[str, Text("a system message")] | None = None, time_prefix: bool = True):
        """``system``: a system turn before the conversation (none by default). ``time_prefix``: open the video
        with "The video lasts for ... seconds, and N frames are uniformly sampled from it." (VideoChat-Flash)."""
        self.system_message = system
        self.time_prefix = time_prefix

    def system(self) -> str:
        return "" if self.system_message is None else f"{IM_START}system\n{self.system_message}{IM_END}\n"

    def turn_start(self, role: str) -> str:
        return f"{IM_START}{role}\n"

    def turn_separator(self) -> str:
        return "\n"

    def video(self, duration: float, num_frames: int) -> list[str]:
        first = TIME_PREFIX.format(duration=duration, num_frames=num_frames) + "\n" if self.time_prefix else ""
        return [f"{first}Frame1: "] + [f"\nFrame{i}: " for i in range(2, num_frames + 1)] + ["\n"]
