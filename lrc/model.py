"""The video MLLM: encoder → compressor → projector → LLM, assembled from built plugins.

Data flow for a batch (DESIGN.md "Data flow"):

    pixel_values [ΣT, 3, S, S]  (frames of every sample, concatenated along time)
      encoder     → patch tokens  [ΣT, M, Dv]
      compressor  → per sample    [T_i · k, Dc]   (HiCo level 1, per clip of clip_len frames)
      projector   → per sample    [T_i · k, D_llm]
      scattered into the <IMG_CONTEXT> slots of the prompt embeddings → LLM → logits
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

COMPONENTS = ("encoder", "compressor", "projector", "llm")


@dataclass
class MLLMOutput:
    """Logits with the labels and answer positions that line up with them (token dropout shortens the
    sequence inside the LLM, so these are not always the batch's own)."""

    logits: torch.Tensor
    labels: torch.Tensor
    answer_start: torch.Tensor


class VideoMLLM(nn.Module):
    def __init__(self, encoder: nn.Module, compressor: nn.Module, projector: nn.Module, llm: nn.Module,
                 img_context_id: int, token_dropout: Any = None):
        super().__init__()
        self.token_dropout = token_dropout  # lrc.token_dropout.TokenDropout or None
        self.chunk_frames = 64  # frames per encoder/compressor pass (rounded to whole clips)
        self.encoder = encoder
        self.compressor = compressor
        self.projector = projector
        self.llm = llm
        self.img_context_id = img_context_id

    @property
    def tokens_per_frame(self) -> int:
        return self.compressor.tokens_per_frame

    def encode_video(self, pixel_values: torch.Tensor, frames_per_sample: list[int]) -> list[torch.Tensor]:
        """Visual embeddings for each sample, ``[T_i · k, D_llm]`` in frame order.

        Frames go through encoder → compressor → projector a chunk of whole clips at a time, so the
        uncompressed patch tokens of a long video never sit in memory all at once (HiCo compresses
        each clip on its own, so the result is the same as one pass over the video).
        """
        encoder_trains = any(p.requires_grad for p in self.encoder.parameters())
        clip_len = getattr(self.compressor, "clip_len", 1)
        chunk = clip_len * max(1, self.chunk_frames // clip_len)
        out = []
        for frames in pixel_values.split(frames_per_sample):
            pieces = []
            for start in range(0, frames.shape[0], chunk):
                with torch.set_grad_enabled(encoder_trains and torch.is_grad_enabled()):
                    patches = self.encoder(frames[start:start + chunk])
                pieces.append(self.projector(self.compressor(patches.unsqueeze(0))[0]))
            out.append(torch.cat(pieces))
        return out

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, frames_per_sample: list[int],
              ids: list[str] | None = None) -> torch.Tensor:
        """Prompt embeddings with the visual embeddings written into the <IMG_CONTEXT> slots."""
        embeds = self.llm.embed(input_ids)
        visual = self.encode_video(pixel_values, frames_per_sample)
        slots = input_ids == self.img_context_id
        have = slots.sum(dim=1).tolist()
        want = [v.shape[0] for v in visual]
        if have != want:
            bad = [f"{(ids or ['?'] * len(have))[i]}: {h} slots for {w} visual tokens"
                   for i, (h, w) in enumerate(zip(have, want)) if h != w]
            raise ValueError("prompt/visual token mismatch (" + "; ".join(bad) + "). The prompt was built for "
                             "a different tokens_per_frame than the compressor produces.")
        visual_flat = torch.cat(visual).to(embeds.dtype)
        # masked_scatter fills slots in row-major order: sample 0's slots first, in sequence order,
        # which is exactly the order of torch.cat(visual).
        return embeds.masked_scatter(slots.unsqueeze(-1), visual_flat)

    def forward(self, batch: dict[str, Any]) -> MLLMOutput:
        embeds = self.embed(batch["input_ids"], batch["pixel_values"], batch["frames_per_sample"], batch.get("ids"))
        if self.token_dropout is None:
            logits = self.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
            return MLLMOutput(logits, batch["labels"], batch["answer_start"])
        # HiCo level 2: visual tokens are dropped between LLM layers, so the output sequence is
        # shorter; labels and answer positions are carried to the kept positions.
        out = self.llm.forward_with_token_dropout(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"],
            visual_mask=batch["input_ids"] == self.img_context_id, schedule=self.token_dropout,
            labels=batch["labels"], training=self.training)
        valid = out.kept >= 0
        labels = torch.where(valid, batch["labels"].gather(1, out.kept.clamp(min=0)), -100)
        answer_start = torch.stack([(out.kept[b] == s).nonzero()[0, 0] if s >= 0 else s.new_tensor(-1)
                                    for b, s in enumerate(batch["answer_start"])])
        return MLLMOutput(out.logits, labels, answer_start)

    def component_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {name: list(getattr(self, name).parameters()) for name in COMPONENTS}


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_base: next-token cross entropy over answer tokens only (labels -100 elsewhere)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100)


def mcq_predictions(logits: torch.Tensor, batch: dict[str, Any],
                    answer_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For MCQ samples: the option whose first token scores highest where the answer begins.

    Returns (predicted option index, correct option index) over the MCQ samples of the batch.
    Likelihood scoring restricted to the options, as multiple-choice benchmarks do, so an untrained
    model sits at chance, not at zero.
    """
    answer_start = batch["answer_start"] if answer_start is None else answer_start
    preds, golds = [], []
    for b, options in enumerate(batch["option_ids"]):
        if not options:
            continue
        position = int(answer_start[b]) - 1  # the logit that predicts the first answer token
        scores = logits[b, position, options]
        preds.append(int(scores.argmax()))
        golds.append(int(batch["answer_index"][b]))
    return torch.tensor(preds, dtype=torch.long), torch.tensor(golds, dtype=torch.long)
