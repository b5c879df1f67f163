"""Turning one conversation plus its sampled frames into token ids and loss labels.

The video is spliced in where the human turn says ``<video>``; lrc's ``chatml`` format lays it out with
VideoChat-Flash's time prefix and one ``FrameN:`` line per frame (InternVideo2.5's finetuning code writes the
same lines):

    The video lasts for 12.50 seconds, and 8 frames are uniformly sampled from it.
    Frame1: <IMG_CONTEXT> × k
    ...
    Frame8: <IMG_CONTEXT> × k

Each frame's ``<IMG_CONTEXT>`` run is a slot the model later fills with ``k`` visual embeddings
(``k`` = the compressor's tokens per frame), so the sequence length is known before the forward and
the model only has to scatter embeddings into those slots (as InternVL does).

Turns are wrapped in the model's prompt format (``model.prompt``, a ``prompts`` plugin: ``chatml``, lrc's
layout above, or ``internvl2_5``, the template InternVL2.5 / InternVideo2.5 were released with). Each text
piece is tokenized in the context of the special token before it, so a prompt gets the ids tokenizing it
whole would give. Labels are ``-100`` everywhere except on the assistant's answers and their end-of-turn
token: the base loss L_base is next-token cross entropy on answers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

IGNORE_INDEX = -100
VIDEO_PLACEHOLDER = "<video>"
IMAGE_PLACEHOLDER = "<image>"  # an image record: one per image, in order (lrc/data/annotations.py)
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


ROLES = {"human": "user", "gpt": "assistant"}  # LLaVA-style turn names -> the roles a prompt format writes


def default_format() -> Any:
    """The ``chatml`` prompt format (found through the registry: the core never imports a plugin module)."""
    from lrc.registry import PROMPTS

    return PROMPTS.get("chatml")()


class PromptBuilder:
    """Encodes conversations for one tokenizer and prompt format; caches the fixed pieces it reuses."""

    def __init__(self, tokenizer: Any, tokens_per_frame: int, task_tokens: dict[str, str] | None = None,
                 prompt: Any = None):
        """``task_tokens`` maps each TPO head's task token to its routing (begin) token; ``prompt`` is a
        :class:`lrc.protocols.PromptFormat` (default: ``chatml``)."""
        self.tok = tokenizer
        self.format = default_format() if prompt is None else prompt
        self.tokens_per_frame = tokens_per_frame
        self.img_context_id = self._single_id(IMG_CONTEXT)
        self.im_start_id = self._single_id(IM_START)
        self.im_end_id = self._single_id(IM_END)
        self.turn_end_id = self._single_id(self.format.turn_end)
        for token in self.format.special_tokens:
            self._single_id(token)
        # an answer's task token X is written <X_begin><X>: the LLM learns to emit the routing token
        # (a label), the task token is input only (its hidden state goes to the head)
        self.task_ids = {self._single_id(t): self._single_id(b) for t, b in (task_tokens or {}).items()}
        self.newline = self.encode("\n")
        added = getattr(tokenizer, "added_tokens_encoder", None) or {}
        self._special_ids = set(tokenizer.all_special_ids) | set(added.values())
        self._piece_cache: dict[tuple[int | None, str], list[int]] = {}
        self.start_ids = (self.leading_special_ids() if self.format.bos else []) + \
            self.encode_piece(self.format.system(), None)

    def _single_id(self, token: str) -> int:
        ids = self.tok(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise PromptError(f"tokenizer splits {token!r} into {len(ids)} ids; call prepare_tokenizer() first")
        return ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def leading_special_ids(self) -> list[int]:
        """The ids the tokenizer puts before any text when it adds its special tokens (InternLM2's ``<s>``)."""
        plain = self.encode("a")
        full = self.tok("a").input_ids
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return full[:start]
        return []

    def encode_piece(self, text: str, prev: int | None, cache: bool = False) -> list[int]:
        """``text``'s ids where it follows token ``prev``: after a special token it is tokenized in that token's
        context, which is how tokenizing the whole prompt at once treats it (some tokenizers mark the start
        of a text differently from text that follows a special token)."""
        if not text:
            return []
        key = (prev, text)
        if cache and key in self._piece_cache:
            return self._piece_cache[key]
        ids = None
        if prev is not None and prev in self._special_ids:
            joined = self.encode(self.tok.convert_ids_to_tokens(prev) + text)
            if joined and joined[0] == prev:
                ids = joined[1:]
        if ids is None:
            ids = self.encode(text)
        if cache:
            if len(self._piece_cache) > 4096:
                self._piece_cache.clear()
            self._piece_cache[key] = ids
        return ids

    def video_ids(self, duration: float, num_frames: int, prev: int | None = None) -> list[int]:
        """The format's video text with k context slots per frame (chatml: the time prefix and one
        ``FrameN:`` line per frame)."""
        pieces = self.format.video(duration, num_frames)
        if len(pieces) != num_frames + 1:
            raise PromptError(f"prompt format {type(self.format).__name__}.video() gave {len(pieces)} pieces for "
                              f"{num_frames} frames; it must give num_frames + 1")
        slots = [self.img_context_id] * self.tokens_per_frame
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            ids += self.encode_piece(piece, ids[-1] if ids else prev, cache=True)
            if i < num_frames:
                ids += slots
        return ids

    def turn_end_ids(self) -> list[int]:
        """The end of a turn: the format's end token and its separator."""
        return [self.turn_end_id] + self.encode_piece(self.format.turn_separator(), self.turn_end_id, cache=True)

    def image_ids(self, index: int, count: int, prev: int | None = None) -> list[int]:
        """Image ``index`` (0-based) of ``count``: k context slots, labelled ``ImageN: `` when there are several,
        and a newline (the format's ``image(index, count)`` pieces, (before, after), when it has one)."""
        layout = getattr(self.format, "image", None)
        before, after = layout(index, count) if callable(layout) else (f"Image{index + 1}: " if count > 1 else "", "\n")
        ids = list(self.encode_piece(before, prev, cache=True))  # a copy: the cache keeps its list
        ids += [self.img_context_id] * self.tokens_per_frame
        return ids + self.encode_piece(after, self.img_context_id, cache=True)

    def encode_conversation(
        self,
        conversations: Sequence[dict[str, str]],
        duration: float | None,
        num_frames: int,
        sample_id: str = "?",
        images: bool = False,
    ) -> EncodedSample:
        """Encode LLaVA-style turns (``from`` = human|gpt) with the video spliced at ``<video>``; with ``images``,
        the ``num_frames`` images of an image record spliced at their ``<image>`` placeholders, in order."""
        input_ids: list[int] = list(self.start_ids)
        labels: list[int] = [IGNORE_INDEX] * len(input_ids)
        answer_start = -1
        videos_seen = 0
        query_positions: list[int] = []
        human_text: list[list[int]] = []  # per human turn: the positions of its own text
        turn_starts: list[int] = []
        for turn_no, turn in enumerate(conversations):
            role, text = turn.get("from"), turn.get("value")
            if role not in ROLES or not isinstance(text, str):
                raise PromptError(f"sample {sample_id}: conversations[{turn_no}] must have from=human|gpt and a "
                                  f"string value, got from={role!r}")
            turn_starts.append(len(input_ids))
            header = self.encode_piece(self.format.turn_start(ROLES[role]), input_ids[-1] if input_ids else None,
                                       cache=True)
            if role == "human":
                body: list[int] = []
                text_positions: list[int] = []
                pieces = text.split(IMAGE_PLACEHOLDER if images else VIDEO_PLACEHOLDER)
                for j, piece in enumerate(pieces):
                    if j > 0 and images:
                        body += self.image_ids(videos_seen, num_frames, prev=(header + body)[-1] if header + body else None)
                        videos_seen += 1
                    elif j > 0:
                        videos_seen += 1
                        if duration is None:
                            raise PromptError(f"sample {sample_id}: <video> placeholder but no video")
                        body += self.video_ids(duration, num_frames, prev=(header + body)[-1] if header + body else None)
                    # the placeholder is conventionally followed by "\n"; the video block ends with one
                    piece_ids = self.encode_piece(piece[1:] if j > 0 and piece.startswith("\n") else piece,
                                                  (header + body)[-1] if header + body else None)
                    start = len(input_ids) + len(header) + len(body)
                    text_positions += range(start, start + len(piece_ids))
                    body += piece_ids
                if len(pieces) > 1 and not query_positions:
                    query_positions = text_positions
                human_text.append(text_positions)
                ids = header + body + self.turn_end_ids()
                input_ids += ids
                labels += [IGNORE_INDEX] * len(ids)
            else:
                answer, answer_labels = self.answer_ids(text, prev=header[-1] if header else None)
                if answer_start < 0:
                    answer_start = len(input_ids) + len(header)
                end = self.turn_end_ids()[1:]  # the separator after the answer's end token
                input_ids += header + answer + end
                labels += [IGNORE_INDEX] * len(header) + answer_labels + [IGNORE_INDEX] * len(end)
        if images and videos_seen != num_frames:
            raise PromptError(f"sample {sample_id}: {videos_seen} {IMAGE_PLACEHOLDER} placeholder(s) in the human turns "
                              f"for {num_frames} image(s); give one per image")
        if duration is not None and videos_seen != 1:
            raise PromptError(f"sample {sample_id}: expected exactly one {VIDEO_PLACEHOLDER} placeholder in the human "
                              f"turns for one video, found {videos_seen}")
        if answer_start < 0:
            raise PromptError(f"sample {sample_id}: no gpt turn to learn from")
        return EncodedSample(input_ids, labels, answer_start, visual_slots=num_frames * self.tokens_per_frame,
                             query_positions=query_positions,
                             extra={"turn_starts": turn_starts, "human_text_positions": human_text})

    def generation_prompt(self, conversations: Sequence[dict[str, str]], duration: float | None, num_frames: int,
                          sample_id: str = "?") -> EncodedSample:
        """The prompt a model answers: ``conversations`` (ending with a human turn) and the opening of the
        assistant's turn. ``answer_start`` is its length (where the answer will begin); ``query_positions``
        are the text of the last human turn (the question TPO heads read)."""
        if not conversations or conversations[-1].get("from") != "human":
            raise PromptError(f"sample {sample_id}: a prompt to answer must end with a human turn")
        enc = self.encode_conversation(list(conversations) + [{"from": "gpt", "value": ""}], duration, num_frames,
                                       sample_id)
        cut = len(enc.input_ids) - len(self.answer_ids("")[0]) - len(self.turn_end_ids()[1:])
        return EncodedSample(enc.input_ids[:cut], [IGNORE_INDEX] * cut, cut, enc.visual_slots,
                             query_positions=enc.extra["human_text_positions"][-1], extra=enc.extra)

    def answer_ids(self, text: str, prev: int | None = None) -> tuple[list[int], list[int]]:
        """An assistant answer's ids (ending with the format's end token, <|im_end|>) and its labels.

        A task token in the answer becomes ``<begin><task>``; the task token is not a label (what
        follows it, <|im_end|>, is still predicted from it)."""
        ids: list[int] = []
        labels: list[int] = []
        for t in self.encode_piece(text, prev) + [self.turn_end_id]:
            if t in self.task_ids:
                ids += [self.task_ids[t], t]
                labels += [self.task_ids[t], IGNORE_INDEX]
            else:
                ids.append(t)
                labels.append(t)
        return ids, labels

    def encode_rejected(self, conversations: Sequence[dict[str, str]], rejected: str, duration: float | None,
                        num_frames: int, sample_id: str = "?", images: bool = False) -> EncodedSample:
        """The same conversation with its last assistant turn replaced by ``rejected`` (DPO's loser).

        Only the replaced turn is labelled, so chosen and rejected log-probabilities compare the two
        final answers alone."""
        if not conversations or conversations[-1].get("from") != "gpt":
            raise PromptError(f"sample {sample_id}: a preference record must end with the chosen gpt turn")
        turns = [dict(t) for t in conversations[:-1]] + [{"from": "gpt", "value": rejected}]
        enc = self.encode_conversation(turns, duration, num_frames, sample_id, images=images)
        return self.last_turn_only(enc)

    def last_turn_only(self, enc: EncodedSample) -> EncodedSample:
        """Labels of every assistant turn but the last set to ignore (for preference scoring)."""
        starts = enc.extra.get("turn_starts")
        last_header = starts[-1] if starts else max(i for i, t in enumerate(enc.input_ids) if t == self.im_start_id)
        labels = [IGNORE_INDEX if i < last_header else l for i, l in enumerate(enc.labels)]
        return EncodedSample(enc.input_ids, labels, enc.answer_start, enc.visual_slots, enc.query_positions)

    def option_ids(self, options: Sequence[str]) -> list[int]:
        """The first token of each option as the assistant would write it (MCQ scoring compares these)."""
        firsts = [self.encode(o)[0] for o in options]
        if len(set(firsts)) != len(firsts):
            raise PromptError(f"options {list(options)} share a first token; MCQ scoring needs distinct first tokens "
                              "(answer with letters, or reword the options)")
        return firsts
