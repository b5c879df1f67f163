"""Generation: a model's answer to one prompt and its video, KV-cached, greedy or sampled, routed to TPO heads.

One sequence at a time (a chat turn, one record of a batch inference):

1. prefill: the prompt's embeddings (visual embeddings in the ``<IMG_CONTEXT>`` slots, TPO's task
   embeddings and ``<region>`` boxes written in, lrc/model/mllm.py) are read once. With token dropout
   enabled (``model.token_dropout``) visual tokens are dropped between the LLM's layers during this read,
   chosen by the attention of the prompt's last token, as VideoChat-Flash does at inference; each layer's
   key/value cache then holds that layer's shorter sequence (lrc/model/token_dropout.py).
2. decode: each new token is one position fed through the cache (the LLM's ``forward_cached``, or
   ``decode_with_token_dropout`` after drops). Without a cache (``use_cache=False``, or an LLM plugin
   without the capability) the whole sequence is recomputed for every token, the drops included (the
   same tokens: their choice depends on the prompt only) — what the benchmark compares against.
3. routing (TPO, paper §3.2): when the LLM emits a head's routing token (``<box_begin>`` ...), its task
   token is fed next, and the head decodes the last-layer hidden state there, with the question's
   hidden states from the prefill, the per-frame visual features and the frames. Generation goes on.

It stops at ``max_new_tokens``, at a stop id (the prompt format's end of turn, the tokenizer's EOS) or
when ``stop`` (a callable over the new ids, e.g. matching stop strings) says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from lrc.protocols import HeadBatch


@dataclass
class Sampling:
    """How the next token is picked: greedy (``do_sample=False``) or sampled from the softmax at
    ``temperature``, restricted to the ``top_k`` most likely tokens (0: all) and the smallest set whose
    probability reaches ``top_p``."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None


def next_token(logits: torch.Tensor, sampling: Sampling) -> int:
    """The next token id from the last position's logits ``[V]``."""
    if not sampling.do_sample or sampling.temperature <= 0:
        return int(logits.argmax())
    scores = logits.float() / sampling.temperature
    if 0 < sampling.top_k < scores.numel():
        kth = scores.topk(sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        ordered, order = scores.sort(descending=True)
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs > sampling.top_p  # keep the smallest prefix reaching top_p
        scores = scores.scatter(0, order, ordered.masked_fill(outside, float("-inf")))
    probs = scores.softmax(-1)
    generator = sampling.generator
    if generator is not None and generator.device != probs.device:
        probs = probs.cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Generation:
    token_ids: list[int]  # the new tokens as the LLM read them (routing and task tokens included)
    heads: dict[str, Any] = field(default_factory=dict)  # task -> the head's decoded output
    stopped_by: str = "length"  # "length" | "stop_id" | "stop"


class _Sequence:
    """The model's running view of one sequence: a key/value cache, or the ids to recompute from."""

    def __init__(self, model: nn.Module, visual: torch.Tensor, input_boxes: torch.Tensor | None, use_cache: bool):
        self.model = model
        self.visual = visual
        self.boxes = [input_boxes] if input_boxes is not None else None
        self.cached = use_cache and hasattr(model.llm, "forward_cached")
        self.dropout = model.token_dropout is not None and hasattr(model.llm, "forward_with_token_dropout")
        self.ids: list[int] = []
        self.prompt_length = 0
        self.cache: Any = None

    def _embeds(self, ids: list[int], with_visual: bool) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids = torch.tensor([ids], device=self.visual.device)
        if with_visual:
            embeds = self.model.splice(input_ids, [self.visual])
        else:
            embeds = self.model.llm.embed(input_ids)
        if self.model.heads is not None:
            embeds = self.model.heads.write_task_embeddings(embeds, input_ids, self.boxes if with_visual else None)
        return input_ids, embeds

    def _full(self, ids: list[int], cache: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits [L', V], last-layer hidden [L', D], kept positions [L'] or None) of the whole sequence."""
        input_ids, embeds = self._embeds(ids, with_visual=True)
        if self.dropout:
            out = self.model.llm.forward_with_token_dropout(
                embeds, torch.ones_like(input_ids), input_ids == self.model.img_context_id, self.model.token_dropout,
                queries=[[self.prompt_length - 1]], cache=cache)
            return out.logits[0], out.hidden[0], out.kept[0]
        if cache is not None:
            out = self.model.llm.forward_cached(embeds, cache, output_hidden_states=True)
        else:
            out = self.model.llm(inputs_embeds=embeds, output_hidden_states=True)
        return out.logits[0], out.hidden_states[-1][0], None

    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Read the prompt: (the last position's logits [V], last-layer hidden states of the prompt [L', D] and
        the prompt positions they belong to [L'] (None: all, in order))."""
        self.ids = list(ids)
        self.prompt_length = len(self.ids)
        if self.cached:
            self.cache = self.model.llm.new_cache() if hasattr(self.model.llm, "new_cache") else None
        logits, hidden, kept = self._full(self.ids, self.cache)
        return logits[-1], hidden, kept

    def step(self, token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``token``: (the logits that follow it [V], its last-layer hidden state [D])."""
        self.ids.append(token)
        if not self.cached:
            logits, hidden, _ = self._full(self.ids)
            return logits[-1], hidden[-1]
        _, embeds = self._embeds([token], with_visual=False)
        if self.dropout:
            out = self.model.llm.decode_with_token_dropout(embeds, self.cache)
            return out.logits[0, -1], out.hidden[0, -1]
        out = self.model.llm.forward_cached(embeds, self.cache, output_hidden_states=True)
        return out.logits[0, -1], out.hidden_states[-1][0, -1]


@torch.no_grad()
def generate(model: nn.Module, prompt_ids: Sequence[int], visual: torch.Tensor, *, frames: torch.Tensor | None = None,
             timestamps: torch.Tensor | None = None, duration: float | None = None,
             query_positions: Sequence[int] = (), input_boxes: torch.Tensor | None = None, max_new_tokens: int = 256,
             stop_ids: Sequence[int] = (), stop: Callable[[list[int]], bool] | None = None,
             sampling: Sampling | None = None, use_cache: bool = True, sample_id: str = "?") -> Generation:
    """The answer of ``model`` (a :class:`lrc.model.mllm.VideoMLLM`) to one prompt (see the module docstring).

    ``prompt_ids`` end where the answer begins; ``visual`` ``[T·k, D]`` fills its ``<IMG_CONTEXT>`` slots;
    ``frames`` (RGB in [0, 1], ``[T, 3, S, S]``), ``timestamps`` ``[T]`` and ``duration`` are what a TPO head
    reads besides the hidden states; ``query_positions`` are the question's positions in the prompt."""
    sampling = sampling or Sampling()
    seq = _Sequence(model, visual, input_boxes, use_cache)
    logits, prompt_hidden, kept = seq.prefill(prompt_ids)
    heads = model.heads
    begin_to_task = heads.task_of_begin if heads is not None else {}
    stops = set(int(t) for t in stop_ids)
    out = Generation(token_ids=[])
    while len(out.token_ids) < max_new_tokens:
        token = next_token(logits, sampling)
        out.token_ids.append(token)
        if token in stops:
            out.stopped_by = "stop_id"
            break
        if stop is not None and stop(out.token_ids):
            out.stopped_by = "stop"
            break
        logits, hidden = seq.step(token)
        if token in begin_to_task:
            task = begin_to_task[token]
            task_token = heads.token_ids[task]
            out.token_ids.append(task_token)
            logits, hidden = seq.step(task_token)
            query = _rows(prompt_hidden, kept, query_positions)
            out.heads[task] = decode_head(model, task, hidden, query, visual, frames, timestamps, duration, sample_id)
    return out


def _rows(hidden: torch.Tensor, kept: torch.Tensor | None, positions: Sequence[int]) -> torch.Tensor:
    """The prompt's hidden states at ``positions`` (text positions survive every token drop)."""
    if not len(positions):
        return hidden.new_zeros(0, hidden.shape[-1])
    if kept is None:
        return hidden[list(positions)]
    index = {int(p): i for i, p in enumerate(kept.tolist())}
    return hidden[[index[int(p)] for p in positions]]


def decode_head(model: nn.Module, task: str, task_hidden: torch.Tensor, query_hidden: torch.Tensor,
                visual: torch.Tensor, frames: torch.Tensor | None, timestamps: torch.Tensor | None,
                duration: float | None, sample_id: str = "?") -> Any:
    """A TPO head's decoded output for one sample, from the hidden state at its task token."""
    from lrc.model.tpo import frame_features

    num_frames = frames.shape[0] if frames is not None else (len(timestamps) if timestamps is not None else 1)
    batch = HeadBatch(
        task_hidden=task_hidden.unsqueeze(0), query_hidden=[query_hidden],
        frame_features=[frame_features(visual, num_frames)],
        frames=[frames] if frames is not None else [],
        timestamps=[timestamps] if timestamps is not None else [],
        durations=torch.as_tensor([float(duration if duration is not None else num_frames)]),
        targets=[], ids=[sample_id])
    head = model.heads.heads[task]
    return head.decode(head(batch), batch)[0]
