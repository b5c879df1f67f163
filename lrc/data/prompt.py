"""Turning one conversation plus its sampled frames into token ids and loss labels.

The video is spliced in where the human turn says ``<video>``, the way InternVideo2.5's model card
prompts it (the released InternVideo2.5 / VideoChat-Flash prompt):

    The video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it.
    Frame1: <IMG_CONTEXT> × k
    ...
    Frame8: <IMG_CONTEXT> × k

Each frame's ``<IMG_CONTEXT>`` run is a slot the model later fills with ``k`` visual embeddings
(``k`` = the compressor's tokens per frame), so the sequence length is known before the forward and
the model only has to scatter embeddings into those slots (as InternVL does).

Turns are wrapped in the ChatML template (Qwen2 / InternLM2 chat format). Labels are ``-100``
everywhere except on the assistant's answers and their end-of-turn token: the base loss L_base is
next-token cross entropy on answers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

IGNORE_INDEX = -100
VIDEO_PLACEHOLDER = "<video>"
IMG_CONTEXT = "<IMG_CONTEXT>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Tokens lrc needs in every tokenizer; prepare_tokenizer() adds the missing ones.
SPECIAL_TOKENS = (IM_START, IM_END, VIDEO_PLACEHOLDER, IMG_CONTEXT)
# TPO (paper §3.2): where a human turn says <region>, an input box is encoded into the prompt by the
# region head's box encoder (the record's ``input_boxes``, in order).
REGION_PLACEHOLDER = "<region>"

TIME_PREFIX = "The video lasts for {duration:.2f} seconds, and {num_frames} frames are uniformly sampled from it."


class PromptError(ValueError):
    """A conversation that cannot be turned into a training sequence."""


def prepare_tokenizer(tokenizer: Any, extra_tokens: Sequence[str] = ()) -> Any:
    """Add lrc's special tokens, and ``extra_tokens`` (the TPO heads' task and routing tokens), where the
    tokenizer lacks them (the LLM is resized to match)."""
    wanted = list(SPECIAL_TOKENS) + [t for t in extra_tokens if t not in SPECIAL_TOKENS]
    missing = [t for t in wanted if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or IM_END
    return tokenizer


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    # index of the first token of the first answer (what an MCQ is scored on)
    answer_start: int
    visual_slots: int = 0
    # positions of the question's own text in the human turn that carries the video (TPO heads read
    # their hidden states as the query features)
    query_positions: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class PromptBuilder:
    """Encodes conversations for one tokenizer; caches the few fixed pieces it reuses."""

    def __init__(self, tokenizer: Any, tokens_per_frame: int, task_tokens: dict[str, str] | None = None):
        """``task_tokens`` maps each TPO head's task token to its routing (begin) token."""
        self.tok = tokenizer
        self.tokens_per_frame = tokens_per_frame
        self.img_context_id = self._single_id(IMG_CONTEXT)
        self.im_start_id = self._single_id(IM_START)
        self.im_end_id = self._single_id(IM_END)
        # an answer's task token X is written <X_begin><X>: the LLM learns to emit the routing token
        # (a label), the task token is input only (its hidden state goes to the head)
        self.task_ids = {self._single_id(t): self._single_id(b) for t, b in (task_tokens or {}).items()}
        self.newline = self.encode("\n")
        self._frame_label_cache: dict[int, list[int]] = {}

    def _single_id(self, token: str) -> int:
        ids = self.tok(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise PromptError(f"tokenizer splits {token!r} into {len(ids)} ids; call prepare_tokenizer() first")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def video_ids(self, duration: float, num_frames: int) -> list[int]:
        """The time prefix and one ``FrameN:`` line with k context slots per frame."""
        ids = self.encode(TIME_PREFIX.format(duration=duration, num_frames=num_frames)) + self.newline
        slots = [self.img_context_id] * self.tokens_per_frame
        for i in range(1, num_frames + 1):
            label = self._frame_label_cache.get(i)
            if label is None:
                label = self._frame_label_cache[i] = self.encode(f"Frame{i}: ")
            ids += label + slots + self.newline
        return ids

    def encode_conversation(
        self,
        conversations: Sequence[dict[str, str]],
        duration: float | None,
        num_frames: int,
        sample_id: str = "?",
    ) -> EncodedSample:
        """Encode LLaVA-style turns (``from`` = human|gpt) with the video spliced at ``<video>``."""
        input_ids: list[int] = []
        labels: list[int] = []
        answer_start = -1
        videos_seen = 0
        query_positions: list[int] = []
        role_ids = {"human": self.encode("user\n"), "gpt": self.encode("assistant\n")}
        for turn_no, turn in enumerate(conversations):
            role, text = turn.get("from"), turn.get("value")
            if role not in role_ids or not isinstance(text, str):
                raise PromptError(f"sample {sample_id}: conversations[{turn_no}] must have from=human|gpt and a "
                                  f"string value, got from={role!r}")
            header = [self.im_start_id] + role_ids[role]
            if role == "human":
                body: list[int] = []
                text_positions: list[int] = []
                pieces = text.split(VIDEO_PLACEHOLDER)
                for j, piece in enumerate(pieces):
                    if j > 0:
                        videos_seen += 1
                        if duration is None:
                            raise PromptError(f"sample {sample_id}: <video> placeholder but no video")
                        body += self.video_ids(duration, num_frames)
                    # the placeholder is conventionally followed by "\n"; the video block ends with one
                    piece_ids = self.encode(piece[1:] if j > 0 and piece.startswith("\n") else piece)
                    start = len(input_ids) + len(header) + len(body)
                    text_positions += range(start, start + len(piece_ids))
                    body += piece_ids
                if len(pieces) > 1 and not query_positions:
                    query_positions = text_positions
                ids = header + body + [self.im_end_id] + self.newline
                input_ids += ids
                labels += [IGNORE_INDEX] * len(ids)
            else:
                answer, answer_labels = self.answer_ids(text)
                if answer_start < 0:
                    answer_start = len(input_ids) + len(header)
                input_ids += header + answer + self.newline
                labels += [IGNORE_INDEX] * len(header) + answer_labels + [IGNORE_INDEX] * len(self.newline)
        if duration is not None and videos_seen != 1:
            raise PromptError(f"sample {sample_id}: expected exactly one {VIDEO_PLACEHOLDER} placeholder in the human "
                              f"turns for one video, found {videos_seen}")
        if answer_start < 0:
            raise PromptError(f"sample {sample_id}: no gpt turn to learn from")
        return EncodedSample(input_ids, labels, answer_start, visual_slots=num_frames * self.tokens_per_frame,
                             query_positions=query_positions)

    def answer_ids(self, text: str) -> tuple[list[int], list[int]]:
        """An assistant answer's ids (ending with <|im_end|>) and its labels.

        A task token in the answer becomes ``<begin><task>``; the task token is not a label (what
        follows it, <|im_end|>, is still predicted from it)."""
        ids: list[int] = []
        labels: list[int] = []
        for t in self.encode(text) + [self.im_end_id]:
            if t in self.task_ids:
                ids += [self.task_ids[t], t]
                labels += [self.task_ids[t], IGNORE_INDEX]
            else:
                ids.append(t)
                labels.append(t)
        return ids, labels

    def encode_rejected(self, conversations: Sequence[dict[str, str]], rejected: str, duration: float | None,
                        num_frames: int, sample_id: str = "?") -> EncodedSample:
        """The same conversation with its last assistant turn replaced by ``rejected`` (DPO's loser).

        Only the replaced turn is labelled, so chosen and rejected log-probabilities compare the two
        final answers alone."""
        if not conversations or conversations[-1].get("from") != "gpt":
            raise PromptError(f"sample {sample_id}: a preference record must end with the chosen gpt turn")
        turns = [dict(t) for t in conversations[:-1]] + [{"from": "gpt", "value": rejected}]
        enc = self.encode_conversation(turns, duration, num_frames, sample_id)
        return self.last_turn_only(enc)

    def last_turn_only(self, enc: EncodedSample) -> EncodedSample:
        """Labels of every assistant turn but the last set to ignore (for preference scoring)."""
        last_header = max(i for i, t in enumerate(enc.input_ids) if t == self.im_start_id)
        labels = [IGNORE_INDEX if i < last_header else l for i, l in enumerate(enc.labels)]
        return EncodedSample(enc.input_ids, labels, enc.answer_start, enc.visual_slots, enc.query_positions)

    def option_ids(self, options: Sequence[str]) -> list[int]:
        """The first token of each option as the assistant would write it (MCQ scoring compares these)."""
        firsts = [self.encode(o)[0] for o in options]
        if len(set(firsts)) != len(firsts):
            raise PromptError(f"options {list(options)} share a first token; MCQ scoring needs distinct first tokens "
                              "(answer with letters, or reword the options)")
        return firsts
