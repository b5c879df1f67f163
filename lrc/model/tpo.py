"""TPO, task preference optimisation (paper §3.2, eq. 3): task tokens, routing to heads, L_task, DPO.

``TaskHeads`` holds what TPO adds to the MLLM:

* the head plugins, keyed by the task each serves (``temporal``, ``region``, ``mask`` ...);
* one learnable *task embedding* per head, written over the input embedding of the head's task
  token (``<temp>`` ...) wherever it occurs — TPO's "task tokens v_k give task embeddings e_k";
* the task recognition classifier for L_task: it reads the hidden state of the token that predicts
  the first answer token (the end of the query) and names the task (``text`` for a plain answer, or
  one of the heads' tasks);
* the region head's box *encoder*, when a head offers ``encode_box``: its output replaces the input
  embedding of each ``<region>`` placeholder (the record's ``input_boxes``, in order).

After the LLM, :meth:`TaskHeads.head_batches` gathers, per task, the samples that carry that task,
with the LAST-layer hidden state at their task token and the context a head needs (query hidden
states, per-frame visual features, frames, timestamps, targets) — each head only runs on its own
samples.

``dpo_loss`` is the DPO objective on (chosen, rejected) responses that the paper's preference view of
TPO implies (paper §3.2); the training module chooses the reference model (the LoRA-disabled
base or a frozen copy).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrc.protocols import HeadBatch

TEXT_TASK = "text"  # the task class of a sample answered in words only


class TaskHeads(nn.Module):
    def __init__(self, heads: dict[str, nn.Module], hidden_size: int, token_ids: dict[str, int],
                 begin_ids: dict[str, int] | None = None, region_token_id: int | None = None,
                 labels: dict[str, str] | None = None):
        """``token_ids``/``begin_ids`` map each head's task to the ids of its task and routing tokens;
        ``labels`` maps a task to the config label of its head (``model.heads.<label>``)."""
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.tasks = list(heads)
        self.token_ids = dict(token_ids)
        self.begin_ids = dict(begin_ids or {})
        self.task_of_begin = {token: task for task, token in self.begin_ids.items()}
        self.labels = dict(labels or {t: t for t in heads})
        self.region_token_id = region_token_id
        self.task_embeddings = nn.Embedding(len(heads), hidden_size)
        nn.init.normal_(self.task_embeddings.weight, std=0.02)
        self.task_classifier = nn.Linear(hidden_size, len(heads) + 1)
        self.classes = [TEXT_TASK] + self.tasks
        encoders = [h for h in heads.values() if hasattr(h, "encode_box")]
        self.box_encoder = encoders[0] if encoders else None

    # -- before the LLM ---------------------------------------------------------------------
    def write_task_embeddings(self, embeds: torch.Tensor, input_ids: torch.Tensor,
                              input_boxes: list[torch.Tensor] | None = None, ids: list[str] | None = None) -> torch.Tensor:
        """Task embeddings at task tokens; encoded input boxes at ``<region>`` placeholders."""
        for k, task in enumerate(self.tasks):
            where = (input_ids == self.token_ids[task]).unsqueeze(-1)
            if where.any():
                embeds = torch.where(where, self.task_embeddings.weight[k].to(embeds.dtype), embeds)
        if self.region_token_id is None:
            return embeds
        slots = input_ids == self.region_token_id
        if not slots.any():
            return embeds
        if self.box_encoder is None:
            raise ValueError("the prompt has <region> placeholders but no head with a box encoder is configured; "
                             "add the `region` head to model.heads")
        boxes = [b if b is not None else torch.zeros(0, 4) for b in (input_boxes or [None] * input_ids.shape[0])]
        have = slots.sum(dim=1).tolist()
        want = [len(b) for b in boxes]
        if have != want:
            bad = [f"{(ids or ['?'] * len(have))[i]}: {h} <region> placeholders for {w} input_boxes"
                   for i, (h, w) in enumerate(zip(have, want)) if h != w]
            raise ValueError("input box mismatch (" + "; ".join(bad) + ")")
        flat = torch.cat([b for b in boxes if len(b)]).to(embeds.device, torch.float32)
        encoded = self.box_encoder.encode_box(flat).to(embeds.dtype)
        return embeds.masked_scatter(slots.unsqueeze(-1), encoded)

    # -- after the LLM ----------------------------------------------------------------------
    def task_labels(self, tasks: list[str]) -> torch.Tensor:
        return torch.tensor([self.classes.index(t) if t in self.tasks else 0 for t in tasks])

    def task_logits(self, hidden: torch.Tensor, query_end: torch.Tensor) -> torch.Tensor:
        """L_task's logits from the hidden state that ends each query (predicts the first answer token)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.task_classifier(hidden[rows, query_end.clamp(min=0)])

    def head_batches(self, batch: dict[str, Any], hidden: torch.Tensor, position: Any,
                     visual: list[torch.Tensor], frames: list[torch.Tensor]) -> dict[str, HeadBatch]:
        """Per task: a HeadBatch of the samples whose record has that task and whose prompt holds its token.

        ``position(b, p)`` maps an original sequence position to its row in ``hidden`` (token dropout
        shortens sequences; text tokens, task tokens included, are never dropped)."""
        out: dict[str, HeadBatch] = {}
        tasks = batch.get("task") or [TEXT_TASK] * hidden.shape[0]
        for task in self.tasks:
            rows = [b for b, t in enumerate(tasks) if t == task]
            token_rows, query, picked = [], [], []
            for b in rows:
                at = (batch["input_ids"][b] == self.token_ids[task]).nonzero().flatten()
                if not len(at):
                    continue  # a prompt being generated has no task token yet
                picked.append(b)
                token_rows.append(hidden[b, position(b, int(at[0]))])
                qpos = batch.get("query_positions", [[]] * hidden.shape[0])[b]
                query.append(hidden[b, [position(b, p) for p in qpos]] if len(qpos) else hidden.new_zeros(0, hidden.shape[-1]))
            if not picked:
                continue
            out[task] = HeadBatch(
                task_hidden=torch.stack(token_rows),
                query_hidden=query,
                frame_features=[frame_features(visual[b], batch["frames_per_sample"][b]) for b in picked],
                frames=[frames[b] for b in picked],
                timestamps=[batch["timestamps"][b] for b in picked],
                durations=torch.as_tensor([float(batch["durations"][b]) for b in picked]),
                targets=[batch["targets"][b] for b in picked] if batch.get("targets") else [],
                ids=[batch["ids"][b] for b in picked],
            )
        return out


def frame_features(visual: torch.Tensor, num_frames: int) -> torch.Tensor:
    """A sample's projected visual tokens ``[T·k, D]`` averaged per frame: ``[T, D]`` (HeadBatch.frame_features)."""
    return visual.view(num_frames, visual.shape[0] // num_frames, -1).mean(1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023): −log σ(β·[(π_c − π_r) − (ref_c − ref_r)]) over summed answer log-probs.

    Returns the mean loss and the per-pair reward margin (for logging: > 0 means the policy prefers the
    chosen answer more than the reference does)."""
    margin = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return -F.logsigmoid(beta * margin).mean(), margin.detach()


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of the labelled tokens, per sample ([B])."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != -100
    logps = shift_logits.log_softmax(-1).gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(-1)
