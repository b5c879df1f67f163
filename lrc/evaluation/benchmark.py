"""What lrc knows about one benchmark: how to read it, how to ask, its reference settings, how it is reported.

Each reader module (lrc/evaluation/mvbench.py ...) defines one :class:`Benchmark`; ``lrc.evaluation.get(name)``
finds it. The settings here are the defaults ``lrc eval`` uses; docs/evaluation.md says where each comes from
and how it compares with the numbers papers report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from lrc.evaluation.answers import LETTERS
from lrc.evaluation.items import Item

MCQ, GROUNDING = "mcq", "grounding"


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str  # MCQ | GROUNDING
    read: Callable[[Path, bool], list[Item]]  # (data folder, with subtitles) -> items
    prompt: Callable[[Item, Sequence[float]], str]  # (item, the sampled frames' times) -> the question asked
    num_frames: int  # frames sampled uniformly by default (the reference evaluation's count)
    max_new_tokens: int  # the reference evaluation's generation limit
    category: str  # what the main breakdown is called ("task", "task type", ...)
    groups: tuple[str, ...] = ()  # further breakdowns (keys of Item.groups)
    mean_over_categories: bool = False  # the benchmark's headline is the mean of its categories (MVBench, MLVU)
    subtitles: bool = False  # the benchmark has a with-subtitles setting
    reference: str = ""  # where the prompt and settings come from

    def label(self, subtitles: bool) -> str:
        """The name results and metrics carry: ``videomme_w_subtitle`` for Video-MME with subtitles (lmms-eval's)."""
        return f"{self.name}_w_subtitle" if subtitles else self.name


def lettered(options: Sequence[str], style: str = "paren") -> str:
    """Options as the reference prompts list them: ``(A) red`` lines (``paren``) or ``A. red`` lines (``dot``)."""
    if style == "paren":
        return "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
