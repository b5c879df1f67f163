"""TPO task heads (paper §3.2, eq. 3): the protocol every head plugin follows.

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
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch


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
    task: ClassVar[str]
    task_token: ClassVar[str]
    begin_token: ClassVar[str]

    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]: ...

    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        """Named scalar terms; ``"loss"`` is the head's L_spec (already combining its own terms)."""

    def decode(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> list[dict[str, Any]]:
        """Per-sample results in user units (seconds, normalised boxes, boolean masks)."""

    def metrics(self, outputs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Per-sample metric values (the module averages them over the evaluation set)."""
