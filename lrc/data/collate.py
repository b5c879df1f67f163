"""Batches from samples: right-padded rows, every sample's frames concatenated along time.

A batch is the one contract between the data layer and the model (docs/design.md): the model reads
these keys and nothing else of the data pipeline. For B usable samples with frame counts T_i:

    size                 B
    skipped              skip markers of the samples dropped from this batch (unreadable video, bad prompt)
    input_ids, labels    long [B, L], right-padded (labels -100 outside the answers)
    attention_mask       long [B, L]
    pixel_values         float [ΣT_i, 3, S, S], normalised with the encoder's mean/std
    frames_per_sample    [T_1 ... T_B];  timestamps: B × float [T_i] seconds;  durations: float [B] seconds
    media                per sample "video" (its T_i frames are one video, compressed in clips) or "image"
                         (T_i images, each a one-frame clip; timestamps and duration 0)
    ids, question_type, task      per-sample strings
    answer_start         long [B], where each sample's first answer begins
    option_ids, answer_index      MCQ scoring: option token ids, the correct option (-1: not an MCQ)
    query_positions      token positions of each question (token dropout's attention queries)
    targets, input_boxes TPO: per-sample head targets ({} without a head), <region> input boxes (or None)
    preference_rows, chosen_labels, rejected_*    DPO pairs, only when the batch has preference records

A packed batch (lrc/data/packing.py) is one row ``[1, N]`` with ``position_ids`` restarting per sample and
``sample_start``/``sample_length`` instead of an attention mask. A sample the dataset could not use arrives
here as a skip marker (``{"skipped": Skipped}``); collate drops it and passes the marker on under
``batch["skipped"]`` so the training module counts it.
"""

from __future__ import annotations

from typing import Any

import torch

from lrc.data.prompt import IGNORE_INDEX


def collate(items: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest sample; frames of all samples are concatenated along time."""
    skipped = [it["skipped"] for it in items if "skipped" in it]
    items = [it for it in items if "skipped" not in it]
    batch: dict[str, Any] = {"skipped": skipped, "size": len(items)}
    if not items:
        return batch
    length = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for b, it in enumerate(items):
        n = len(it["input_ids"])
        ids[b, :n], labels[b, :n], mask[b, :n] = it["input_ids"], it["labels"], 1
    batch.update(
        input_ids=ids, labels=labels, attention_mask=mask,
        pixel_values=torch.cat([it["pixel_values"] for it in items]),
        frames_per_sample=[len(it["pixel_values"]) for it in items],
        timestamps=[it["timestamps"] for it in items],
        ids=[it["id"] for it in items],
        answer_start=torch.tensor([it["answer_start"] for it in items]),
        question_type=[it["question_type"] for it in items],
        # MCQ scoring: option token ids and the correct option (-1 / empty for non-MCQ samples)
        option_ids=[it.get("option_ids", []) for it in items],
        answer_index=torch.tensor([it.get("answer_index", -1) for it in items]),
        query_positions=[it.get("query_positions", []) for it in items],
        media=[it.get("media", "video") for it in items],
    )
    preference = [b for b, it in enumerate(items) if "rejected_input_ids" in it]
    if preference:
        # DPO pairs: the chosen answer is scored on the batch's own sequence (with chosen_labels),
        # the rejected one on its own padded sequence that reuses the sample's video
        rejected_len = max(len(items[b]["rejected_input_ids"]) for b in preference)
        chosen_labels = torch.full((len(preference), length), IGNORE_INDEX, dtype=torch.long)
        r_ids = torch.full((len(preference), rejected_len), pad_id, dtype=torch.long)
        r_labels = torch.full((len(preference), rejected_len), IGNORE_INDEX, dtype=torch.long)
        r_mask = torch.zeros((len(preference), rejected_len), dtype=torch.long)
        for row, b in enumerate(preference):
            it = items[b]
            chosen_labels[row, :len(it["chosen_labels"])] = it["chosen_labels"]
            n = len(it["rejected_input_ids"])
            r_ids[row, :n], r_labels[row, :n], r_mask[row, :n] = it["rejected_input_ids"], it["rejected_labels"], 1
        batch.update(preference_rows=preference, chosen_labels=chosen_labels, rejected_input_ids=r_ids,
                     rejected_labels=r_labels, rejected_attention_mask=r_mask)
    # TPO: per-sample task, head targets ({} for samples without a head), <region> input boxes
    # (None where the prompt has none) and video durations
    batch.update(
        task=[it.get("task", "chat") for it in items],
        targets=[it.get("targets", {}) for it in items],
        input_boxes=[it.get("input_boxes") for it in items],
        durations=torch.tensor([it.get("duration", 0.0) for it in items], dtype=torch.float32),
    )
    return batch


class Collate:
    """Picklable collate (worker processes need it)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(items, self.pad_id)
