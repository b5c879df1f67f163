"""The plugin protocols: what lrc's core reads and calls on each kind of plugin, and the shared input checks.

One ``typing.Protocol`` per kind (docs/plugins.md): :class:`Encoder`, :class:`Compressor`,
:class:`Projector`, :class:`LLM`, :class:`Sampler`, :class:`PromptFormat` and :class:`Head` (with
:class:`HeadBatch`, what a head receives). Each lists exactly the attributes and methods that lrc's core (the builder, the model, the
data module, the training module, the parallel and weights layers, the commands) uses on a plugin of
that kind, with the shapes it relies on. They are ``runtime_checkable``: ``isinstance(plugin, Compressor)``
checks that the members exist, not their types or shapes; the contract tests
(tests/plugins/test_contracts.py) check the behaviour on every registered plugin.

Encoders, compressors, projectors, LLMs and heads are ``torch.nn.Module``s: lrc calls them (``module(x)``
runs ``forward``), freezes them (``optim.freeze``), and gives their parameters to the optimiser, the
checkpoints and FSDP. A sampler is any callable object.

Optional capabilities are separate protocols that lrc checks for before using them, never part of a
kind's required protocol: :class:`TokenDropoutLLM`, :class:`SequenceParallelLLM`,
:class:`TransformersLLM`, :class:`LoraLLM`, :class:`CachedLLM` and :class:`BoxEncodingHead`. Any component may also declare
``block_classes`` (a tuple of its repeated ``nn.Module`` block classes, as ``timm_vit`` does): FSDP's
wrapping units and what activation checkpointing recomputes (lrc/parallel/distributed.py; transformers
models say the same with ``_no_split_modules``).

Shared input checks, so that every plugin refuses bad input with the same words: :func:`check_clip_tokens`
for a compressor's input and :func:`check_head_batch` for a head's batch. A sampler's call arguments
and frame arithmetic are in lrc/data/sampling.py. Constructor arguments are checked from their
annotations (lrc/constraints.py: ``PositiveInt``, ``UnitInterval``, ``Literal[...]``) by ``lrc validate``
and the builder, before the constructor runs.

This module is imported by plugins and the model; it imports torch and nothing else of weight.

TPO task heads (paper §3.2, eq. 3)
----------------------------------

A head serves one *task* (``temporal``, ``region``, ``mask`` ... an annotation record's ``task``
field). It declares two tokens that lrc adds to the tokenizer:

* ``task_token`` (``<temp>``): an input-only token whose embedding is a learnable task embedding;
  the LLM's LAST-layer hidden state at this position is the head's input (TPO);
* ``begin_token`` (``<temp_begin>``): the routing token. In training data an answer that contains
  the task token is encoded as ``<temp_begin><temp>``: the begin token is a normal label (the LLM
  learns to route), the task token is never a label. At generation, emitting the begin token makes
  lrc append the task token, run one more step and call the head.

The model collects, for the N samples of a batch whose record has the head's task, a
:class:`HeadBatch`; the head turns it into predictions (``forward``), training terms (``loss``),
results in user units (``decode``) and per-sample metric values (``metrics``). Each head only runs
on samples that carry its annotations. The training module weighs ``loss(...)["loss"]`` as
``L_spec,k`` in L_total = L_base + λ1·L_task + λ2·Σ_k w_k·L_spec,k, and logs every other term.

Targets per task (built by ``lrc.data.tasks.task_targets`` from a record and its sampled frames):

* ``temporal``: ``spans`` float [K, 2] seconds; ``saliency`` float [T] (1 where a sampled frame's
  timestamp lies inside a span, else 0);
* ``region``: ``box`` float [4] normalised (x1, y1, x2, y2) in [0, 1]; ``frame`` int, the index (0-based)
  of the sampled frame the question is about;
* ``mask``: ``masks`` bool [T, H, W] at the sampled frames' size; ``boxes`` float [T, 4] normalised
  xyxy (zeros where not visible); ``visible`` bool [T].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    import numpy as np


# -- the model's components ------------------------------------------------------------------------
@runtime_checkable
class Encoder(Protocol):
    """Frames to patch tokens, frame by frame (``model.encoder``).

    The builder reads ``out_dim`` and ``num_tokens`` (they become the compressor's ``in_dim`` and
    ``frame_tokens``); the data module resizes frames to ``image_size`` and normalises them with ``mean``
    and ``std``, and the model undoes that normalisation to hand heads RGB frames in [0, 1].
    """

    out_dim: int  # D_v: the width of one patch token
    num_tokens: int  # M: patch tokens per frame
    image_size: int  # S: frames arrive as S×S
    mean: tuple[float, float, float]  # RGB normalisation: (x - mean) / std for x in [0, 1]
    std: tuple[float, float, float]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[N, 3, S, S]`` normalised frames → ``[N, M, out_dim]`` patch tokens (N frames of any samples)."""


@runtime_checkable
class Compressor(Protocol):
    """HiCo level 1 (paper §3.2): each clip of ``clip_len`` frames to ``clip_len·tokens_per_frame`` tokens.

    Built with ``in_dim`` and, if it asks, ``frame_tokens`` (the encoder's ``out_dim`` and ``num_tokens``).
    The builder reads ``out_dim`` (the projector's ``in_dim``); the prompt holds ``tokens_per_frame``
    ``<IMG_CONTEXT>`` slots per frame; the samplers that choose a frame count round it to multiples of
    ``clip_len``, and the model streams long videos a chunk of whole clips at a time.
    """

    out_dim: int  # D_c: the width of an output token
    tokens_per_frame: int  # k: output tokens per input frame, exactly
    clip_len: int  # frames compressed together (1: each frame on its own)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T, M, in_dim]`` → ``[B, T·tokens_per_frame, out_dim]`` in frame order: output token ``j``
        belongs to frame ``j // tokens_per_frame``. Each clip is compressed on its own (compressing the
        video in pieces of whole clips gives the same tokens). ``T`` not a multiple of ``clip_len`` is a
        ``ValueError`` naming ``clip_len`` (:func:`check_clip_tokens` says it)."""


@runtime_checkable
class Projector(Protocol):
    """Compressed visual tokens into the LLM's embedding space (``model.projector``).

    Built with ``in_dim`` (the compressor's ``out_dim``) and ``out_dim`` (the LLM's ``hidden_size``)."""

    out_dim: int  # D_llm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[..., in_dim]`` → ``[..., out_dim]``, token by token (the model passes ``[T·k, in_dim]``)."""


@runtime_checkable
class LLM(Protocol):
    """The language model (``model.llm``). Built with ``vocab_size`` (the tokenizer's length, after lrc
    added its special tokens) and, if it asks, ``new_token_ids`` (the TPO heads' tokens, which must stay
    trainable under LoRA)."""

    hidden_size: int  # D: embeddings and hidden states; the projector's out_dim and the heads' input width

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids → ``[B, L, D]`` input embeddings; the model writes the visual embeddings
        and TPO's task embeddings into them before calling ``forward``."""

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, output_hidden_states: bool = False) -> Any:
        """``[B, L, D]`` → an output with ``.logits`` ``[B, L, V]`` and, with ``output_hidden_states``,
        ``.hidden_states`` whose last item is the last layer's ``[B, L, D]`` (TPO's heads read it).
        ``attention_mask`` ``[B, L]`` is 1 for real tokens, 0 for padding. A packed row (``data.packing``)
        comes as ``[1, L]`` with ``position_ids`` restarting at 0 for every sample and
        ``attention_mask=None``: each sample attends within itself only."""


@runtime_checkable
class TokenDropoutLLM(Protocol):
    """Optional. HiCo level 2: visual tokens dropped between decoder layers (``model.token_dropout``,
    lrc/model/token_dropout.py). Without this method a config that enables token dropout is refused at
    build time. A ``num_layers: int`` attribute (decoder layers), when present, lets the builder check
    the schedule's layer indices against the model."""

    def forward_with_token_dropout(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                                   visual_mask: torch.Tensor, schedule: Any, labels: torch.Tensor | None = None,
                                   training: bool = False) -> Any:
        """``visual_mask`` ``[B, L]`` marks the visual tokens; ``schedule`` a
        ``lrc.model.token_dropout.TokenDropout``. An output with ``.logits`` ``[B, L', V]``, ``.kept``
        ``[B, L']`` (each kept token's original position, -1 for padding) and ``.hidden`` ``[B, L', D]``
        (last-layer hidden states)."""


@runtime_checkable
class SequenceParallelLLM(Protocol):
    """Optional. §3.5 long sequences: each training sequence split over ``sequence_parallel`` ranks,
    Ulysses-style (lrc/parallel/sequence_parallel.py). lrc reads ``sequence_parallel`` with a default
    of 1 (the data module shards batches over groups of that many ranks) and calls the method only above 1."""

    sequence_parallel: int  # P: ranks that share one sequence

    def forward_sequence_parallel(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                  labels: torch.Tensor | None = None, output_hidden_states: bool = False) -> Any:
        """This rank's chunk: an output with ``.logits`` ``[B, chunk, V]``, ``.loss`` (L_base over the
        whole sequence, alike on every rank) and, when asked, ``.hidden`` ``[B, L, D]`` of the whole sequence."""


@runtime_checkable
class TransformersLLM(Protocol):
    """Optional. An LLM that wraps a transformers causal LM: ``model.init`` grows its vocabulary to a
    checkpoint's (``resize_token_embeddings``, lrc/weights/pretrained.py) and ``lrc export`` writes it as a
    transformers folder (``save_pretrained``; under peft, ``merge_and_unload`` first)."""

    model: Any  # a transformers PreTrainedModel, or peft's wrapper around one


@runtime_checkable
class LoraLLM(Protocol):
    """Optional. LoRA adapters on the LLM: with ``loss.dpo_reference=lora_disabled`` DPO's reference
    policy is the same model with the adapters switched off, through ``model.disable_adapter()`` (a
    context manager, as peft's)."""

    has_lora: bool  # read with a default of False
    model: Any


@runtime_checkable
class CachedLLM(Protocol):
    """Optional. Generation with a key/value cache (lrc/model/generation.py): the prompt is read once and every
    new token costs one position. Without it lrc generates by recomputing the whole sequence per token."""

    def forward_cached(self, inputs_embeds: torch.Tensor, cache: Any = None, output_hidden_states: bool = False) -> Any:
        """``[1, L, D]`` new positions after those already in ``cache`` (None: a fresh cache) → an output with
        ``.logits`` ``[1, L, V]``, ``.cache`` (pass it back with the next positions) and, when asked,
        ``.hidden_states`` whose last item is the last layer's ``[1, L, D]``."""


# -- data ------------------------------------------------------------------------------------------
@runtime_checkable
class Sampler(Protocol):
    """Which frames of a video to decode (``data.sampler``). Built with ``clip_len`` (the compressor's) if
    it asks: a sampler that chooses the frame count itself keeps it a multiple of ``clip_len``; one with
    a fixed count (``num_frames``) has it checked by ``lrc validate``. lrc/data/sampling.py has the checks
    and the frame arithmetic lrc's samplers share.

    Optional attribute ``exact`` (bool; true when absent): whether the data module must decode exactly the
    frames returned, or may read a nearby key frame where one is closer to a sampled frame than to any other
    (``lrc.data.read_frames(..., exact=False)``, docs/data.md "Reading frames"); the frames actually read and
    their timestamps then replace the sampled ones."""

    def __call__(self, video_frames: int, fps: float, duration: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The video's frame count (>= 1), frame rate and duration in seconds (``None``:
        ``video_frames / fps``) → ``(indices, timestamps)``: int64 ``[T]`` sorted in
        ``[0, video_frames − 1]`` (repeats allowed for short videos) and float64 ``[T]`` seconds,
        ``index / fps``. The same arguments give the same frames: the data module calls it once to count
        a sample's tokens and again to decode them, and ``data.cache_frames`` keeps the first frames."""


@runtime_checkable
class PromptFormat(Protocol):
    """How a conversation and its video are laid out as text: the model's chat template (``model.prompt``).

    lrc/data/prompt.py encodes every training sample and every chat prompt with it. Each piece is text;
    lrc tokenizes a piece in the context of the special token before it, which gives the ids tokenizing
    the whole prompt at once would (tokenizers split text at special tokens before anything else). A
    sequence is ``[BOS if bos] system() turn_start(role) ... turn_end turn_separator() ...``; the k
    ``<IMG_CONTEXT>`` slots of frame i (k = the compressor's tokens per frame) sit between
    ``video(...)[i]`` and ``video(...)[i + 1]``, where the human turn says ``<video>``.
    """

    special_tokens: tuple[str, ...]  # tokens the format writes that must be single ids (added when missing)
    turn_end: str  # the special token that ends every turn; an answer's copy is a label and stops generation
    bos: bool  # the sequence starts with the tokenizer's own leading special tokens, as tokenizer(text) adds them

    def system(self) -> str:
        """Text before the first turn (a whole system turn, its end included), or "" for none."""

    def turn_start(self, role: str) -> str:
        """The text that opens a turn of ``role``, ``"user"`` or ``"assistant"`` (``"<|im_start|>user\\n"``)."""

    def turn_separator(self) -> str:
        """Text after ``turn_end``, never a label (``"\\n"``)."""

    def video(self, duration: float, num_frames: int) -> list[str]:
        """``num_frames + 1`` pieces around the frames' slots: before frame 1, between frames, after the last
        (ending where the question's text begins)."""


# -- TPO heads --------------------------------------------------------------------------------------
@dataclass
class HeadBatch:
    """What the model hands a head for the N samples of a batch that carry its task."""

    task_hidden: torch.Tensor  # [N, D] last-layer LLM hidden state at the task token
    query_hidden: list[torch.Tensor]  # N × [Lq_i, D] last-layer hidden states of the question's text tokens
    frame_features: list[torch.Tensor]  # N × [T_i, D] projected visual tokens averaged per frame (D = LLM hidden)
    frames: list[torch.Tensor]  # N × [T_i, 3, S, S] sampled frames, RGB in [0, 1]
    timestamps: list[torch.Tensor]  # N × [T_i] seconds
    durations: torch.Tensor  # [N] seconds
    targets: list[dict[str, Any]] = field(default_factory=list)  # N × task targets; empty at inference
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.task_hidden.shape[0]


@runtime_checkable
class Head(Protocol):
    """One TPO task head (``model.heads.<label>``; the section above). Built with ``hidden_size`` (the LLM's)."""

    task: ClassVar[str]  # the records' ``task`` it serves: "temporal", "region", "mask" ...
    task_token: ClassVar[str]  # e.g. "<temp>": input only; the hidden state there is the head's input
    begin_token: ClassVar[str]  # e.g. "<temp_begin>": the routing token the LLM learns to emit

    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]:
        """Named prediction tensors for the batch's N samples (``loss`` and ``decode`` read them)."""

    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        """Named scalar terms; ``"loss"`` is the head's L_spec (already combining its own terms)."""

    def decode(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> list[dict[str, Any]]:
        """Per-sample results in user units (seconds, normalised boxes, boolean masks)."""

    def metrics(self, outputs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Per-sample metric values (the module averages them over the evaluation set)."""


@runtime_checkable
class BoxEncodingHead(Protocol):
    """Optional. A head that also *reads* boxes: lrc adds a ``<region>`` token to the tokenizer and writes
    ``encode_box`` of each record's ``input_boxes`` into its positions (lrc/model/tpo.py; docs/tpo.md)."""

    def encode_box(self, boxes: torch.Tensor) -> torch.Tensor:
        """``[K, 4]`` normalised xyxy → ``[K, hidden_size]`` prompt embeddings."""


# -- shared input checks ---------------------------------------------------------------------------
def check_clip_tokens(plugin: str, tokens: torch.Tensor, in_dim: int, clip_len: int,
                      frame_tokens: int | None = None) -> tuple[int, int, int, int]:
    """A compressor's input: ``tokens`` must be floating point ``[B, T, M, in_dim]`` with ``T`` a multiple of
    ``clip_len`` (and ``M == frame_tokens`` when given). Returns ``(B, T, M, D)``; raises ``ValueError``
    messages that start with ``"<plugin>: "`` and say what to change."""
    if tokens.ndim != 4:
        raise ValueError(f"{plugin}: expected tokens [B, T, M, D], got shape {tuple(tokens.shape)}")
    b, t, m, d = tokens.shape
    if d != in_dim:
        raise ValueError(f"{plugin}: token dim {d} does not match in_dim {in_dim} given at build time")
    if frame_tokens is not None and m != frame_tokens:
        raise ValueError(f"{plugin}: got {m} tokens per frame, but frame_tokens={frame_tokens} was given at "
                         "build time; the encoder and compressor disagree")
    if not tokens.is_floating_point():
        raise ValueError(f"{plugin}: tokens must be floating point, got {tokens.dtype}")
    if t % clip_len:
        raise ValueError(
            f"{plugin}: got T={t} frames, which is not a multiple of clip_len={clip_len}. "
            f"Sample a multiple of {clip_len} frames (the sampler's num_frames), or change clip_len."
        )
    return b, t, m, d


def check_head_batch(plugin: str, batch: HeadBatch, hidden_size: int, fields: tuple[str, ...] = ()) -> int:
    """A head's batch: ``task_hidden`` ``[N >= 1, hidden_size]`` and, for each of ``fields`` (names of
    :class:`HeadBatch`'s per-sample lists), one entry per sample. Returns N; raises ``ValueError``
    messages that start with ``"<plugin>: "``."""
    hidden = batch.task_hidden
    if hidden.ndim != 2 or hidden.shape[1] != hidden_size:
        raise ValueError(f"{plugin}: task_hidden must be [N, {hidden_size}] (hidden_size given at build time), "
                         f"got {tuple(hidden.shape)}")
    n = hidden.shape[0]
    if n == 0:
        raise ValueError(f"{plugin}: empty HeadBatch; the model calls a head only for samples with its task")
    for name in fields:
        if len(getattr(batch, name)) != n:
            raise ValueError(f"{plugin}: HeadBatch.{name} has {len(getattr(batch, name))} entries for {n} samples")
    return n
