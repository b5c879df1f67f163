"""The video MLLM: encoder → compressor → projector → LLM, assembled from built plugins.

Data flow for a batch (docs/design.md, "The data flow"):

    pixel_values [ΣT, 3, S, S]  (frames of every sample, concatenated along time)
      encoder     → patch tokens  [ΣT, M, Dv]
      compressor  → per sample    [T_i · k, Dc]   (HiCo level 1, per clip of clip_len frames)
      projector   → per sample    [T_i · k, D_llm]
      scattered into the <IMG_CONTEXT> slots of the prompt embeddings → LLM → logits
      TPO (lrc/model/tpo.py): task embeddings at task tokens → last-layer hidden state there → head plugins
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lrc.config.schema import COMPONENTS  # the model's parts, as optim and model.init name them
from lrc.protocols import LLM, Compressor, Encoder, Projector


@dataclass
class MLLMOutput:
    """Logits with the labels and answer positions that line up with them (token dropout shortens the
    sequence inside the LLM, so these are not always the batch's own), and with TPO heads, what they
    read and predicted."""

    logits: torch.Tensor
    labels: torch.Tensor
    answer_start: torch.Tensor
    visual: list[torch.Tensor] = field(default_factory=list)  # per sample [T_i·k, D_llm]
    task_logits: torch.Tensor | None = None  # [B, 1 + heads] L_task's logits
    head_inputs: dict[str, Any] = field(default_factory=dict)  # task -> lrc.protocols.HeadBatch
    head_predictions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # sequence parallelism (training): ``logits`` are this rank's chunk of the sequence only, and L_base
    # comes computed over the whole sequence (lrc/parallel/sequence_parallel.py)
    base_loss: torch.Tensor | None = None


class VideoMLLM(nn.Module):
    def __init__(self, encoder: Encoder, compressor: Compressor, projector: Projector, llm: LLM,
                 img_context_id: int, token_dropout: Any = None, heads: nn.Module | None = None):
        """The built plugins (their protocols: lrc/protocols.py). ``heads``: a :class:`lrc.model.tpo.TaskHeads`
        (TPO), or None for a plain video MLLM."""
        super().__init__()
        self.token_dropout = token_dropout  # lrc.model.token_dropout.TokenDropout or None
        self.chunk_frames = 64  # frames per encoder/compressor pass (rounded to whole clips)
        self.encoder = encoder
        self.compressor = compressor
        self.projector = projector
        self.llm = llm
        self.heads = heads
        self.img_context_id = img_context_id
        if token_dropout is not None and self.sequence_parallel > 1:
            raise ValueError("model.token_dropout does not work with model.llm.sequence_parallel > 1 (dropping tokens "
                             "between layers would unbalance the ranks' chunks); turn one of them off")

    @property
    def sequence_parallel(self) -> int:
        """Ranks that share one training sequence (the LLM's ``sequence_parallel``; 1: none)."""
        return getattr(self.llm, "sequence_parallel", 1)

    @property
    def tokens_per_frame(self) -> int:
        return self.compressor.tokens_per_frame

    def encode_video(self, pixel_values: torch.Tensor, frames_per_sample: list[int],
                     media: list[str] | None = None) -> list[torch.Tensor]:
        """Visual embeddings for each sample, ``[T_i · k, D_llm]`` in frame order.

        Frames go through encoder → compressor → projector a chunk of whole clips at a time, so the
        uncompressed patch tokens of a long video never sit in memory all at once (HiCo compresses
        each clip on its own, so the result is the same as one pass over the video).

        ``media[b] == "image"`` (the batch's ``media``): sample b's frames are separate images, each a one-frame
        clip, so images are never merged with each other. A frame count that is not a multiple of the
        compressor's ``clip_len`` is completed to whole clips (see :meth:`compress`): every sample still gets
        exactly ``T_i · k`` tokens, one per slot of its prompt.
        """
        encoder_trains = any(p.requires_grad for p in self.encoder.parameters())
        clip_len = getattr(self.compressor, "clip_len", 1)
        chunk = clip_len * max(1, self.chunk_frames // clip_len)
        out = []
        for b, frames in enumerate(pixel_values.split(frames_per_sample)):
            images = media is not None and media[b] == "image"
            pieces = []
            for start in range(0, frames.shape[0], chunk):
                with torch.set_grad_enabled(encoder_trains and torch.is_grad_enabled()):
                    patches = self.encoder(frames[start:start + chunk])
                pieces.append(self.projector(self.compress(patches, images)))
            out.append(torch.cat(pieces))
        return out

    def compress(self, patches: torch.Tensor, images: bool = False) -> torch.Tensor:
        """One sample's patch tokens ``[T, M, Dv]`` → ``[T · k, Dc]`` through the compressor, whatever T.

        The compressor takes whole clips of ``clip_len`` frames. When T is not a multiple of it, the last clip
        is completed by repeating its last frame, compressed as a full clip, and the tokens past ``T · k`` (in
        the compressor's output order: those of the repeated frames) are dropped. With ``images``, each frame
        is its own clip (the frame repeated ``clip_len`` times) and keeps its clip's first ``k`` tokens. So an
        image is always ``k`` tokens, and T frames are always ``T · k`` tokens (docs/data.md, "Images")."""
        t = patches.shape[0]
        clip_len = getattr(self.compressor, "clip_len", 1)
        k = self.tokens_per_frame
        if images and clip_len > 1:
            tokens = self.compressor(patches.unsqueeze(1).expand(-1, clip_len, -1, -1))  # [T, clip_len·k, Dc]
            return tokens[:, :k].reshape(t * k, tokens.shape[-1])
        pad = -t % clip_len
        if pad:
            patches = torch.cat([patches, patches[-1:].expand(pad, -1, -1)])
        return self.compressor(patches.unsqueeze(0))[0][: t * k]

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, frames_per_sample: list[int],
              ids: list[str] | None = None) -> torch.Tensor:
        """Prompt embeddings with the visual embeddings written into the <IMG_CONTEXT> slots."""
        return self.splice(input_ids, self.encode_video(pixel_values, frames_per_sample), ids)

    def splice(self, input_ids: torch.Tensor, visual: list[torch.Tensor], ids: list[str] | None = None) -> torch.Tensor:
        embeds = self.llm.embed(input_ids)
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
        if self.training and self.sequence_parallel > 1 and is_packed(batch):
            raise ValueError("packed batches (data.packing) do not work with model.llm.sequence_parallel > 1; "
                             "turn one of them off")
        visual = self.encode_video(batch["pixel_values"], batch["frames_per_sample"], batch.get("media"))
        if is_packed(batch):
            return self._forward_packed(batch, visual)
        embeds = self.splice(batch["input_ids"], visual, batch.get("ids"))
        if self.heads is not None:
            embeds = self.heads.write_task_embeddings(embeds, batch["input_ids"], batch.get("input_boxes"),
                                                      batch.get("ids"))
        want_hidden = self.heads is not None
        if self.training and self.sequence_parallel > 1:
            # §3.5 long sequences: the LLM runs on this rank's chunk of every sequence (Ulysses); heads
            # read the gathered last-layer hidden states of the whole sequence
            out = self.llm.forward_sequence_parallel(embeds, batch["attention_mask"], batch["labels"],
                                                     output_hidden_states=want_hidden)
            result = MLLMOutput(out.logits, batch["labels"], batch["answer_start"], visual=visual, base_loss=out.loss)
            hidden, kept = out.hidden, None
        elif self.token_dropout is None:
            out = self.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                           output_hidden_states=want_hidden)
            result = MLLMOutput(out.logits, batch["labels"], batch["answer_start"], visual=visual)
            hidden, kept = (out.hidden_states[-1] if want_hidden else None), None
        else:
            # HiCo level 2: visual tokens are dropped between LLM layers, so the output sequence is
            # shorter; labels and answer positions are carried to the kept positions.
            out = self.llm.forward_with_token_dropout(
                inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                visual_mask=batch["input_ids"] == self.img_context_id, schedule=self.token_dropout,
                labels=batch["labels"], training=self.training)
            kept = out.kept
            valid = kept >= 0
            labels = torch.where(valid, batch["labels"].gather(1, kept.clamp(min=0)), -100)
            answer_start = torch.stack([(kept[b] == s).nonzero()[0, 0] if s >= 0 else s.new_tensor(-1)
                                        for b, s in enumerate(batch["answer_start"])])
            result = MLLMOutput(out.logits, labels, answer_start, visual=visual)
            hidden = out.hidden
        if self.heads is not None:
            self._run_heads(batch, result, hidden, kept)
        return result

    def _forward_packed(self, batch: dict[str, Any], visual: list[torch.Tensor]) -> MLLMOutput:
        """A packed batch (lrc/data/packing.py): one row ``[1, N]`` holding several whole samples.

        The row's ``<IMG_CONTEXT>`` slots are filled in sample order, which is the order of
        ``torch.cat(visual)``. The LLM gets ``position_ids`` that restart at 0 for every sample and no 2-D
        mask, which transformers turns into attention within each sample only (a block-diagonal causal
        mask for SDPA/eager, varlen flash-attention on GPU). Logits and labels stay packed (L_base is a
        mean over answer tokens, so packing does not change it); TPO heads read each sample's hidden
        states through its own view of the row."""
        if self.token_dropout is not None:
            raise ValueError("token dropout (model.token_dropout) does not support packed batches "
                             "(data.packing); turn one of them off")
        ids = batch.get("ids") or []
        embeds = self.splice(batch["input_ids"], [torch.cat(visual)], [", ".join(ids)])
        if self.heads is not None:
            boxes = [b for b in batch.get("input_boxes") or [] if b is not None]
            embeds = self.heads.write_task_embeddings(embeds, batch["input_ids"], [torch.cat(boxes)] if boxes else None,
                                                      [", ".join(ids)])
        out = self.llm(inputs_embeds=embeds, attention_mask=None, position_ids=batch["position_ids"],
                       output_hidden_states=self.heads is not None)
        result = MLLMOutput(out.logits, batch["labels"], batch["answer_start"], visual=visual)
        if self.heads is not None:
            # sample b's view of the row: its hidden states at row positions (a broadcast view, no copy)
            # and the row's ids with every other sample's tokens blanked, so heads find only its tokens
            view = {**batch, "input_ids": per_sample_rows(batch, batch["input_ids"], fill=-1)}
            self._run_heads(view, result, out.hidden_states[-1].expand(batch["size"], -1, -1), None)
        return result

    def _run_heads(self, batch: dict[str, Any], result: MLLMOutput, hidden: torch.Tensor,
                   kept: torch.Tensor | None) -> None:
        """TPO: L_task's logits, and each head on the samples that carry its task (lrc/model/tpo.py)."""
        def position(b: int, p: int) -> int:
            return p if kept is None else int((kept[b] == p).nonzero()[0, 0])

        result.task_logits = self.heads.task_logits(hidden, result.answer_start - 1)
        frames = self.frames(batch["pixel_values"], batch["frames_per_sample"])
        result.head_inputs = self.heads.head_batches(batch, hidden, position, result.visual, frames)
        result.head_predictions = {task: self.heads.heads[task](hb) for task, hb in result.head_inputs.items()}

    def answer_logps(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                     visual: list[torch.Tensor], input_boxes: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Summed log-probability of each sequence's labelled tokens, given its visual embeddings (DPO).

        A plain forward (no token dropout), so chosen and rejected answers are scored alike."""
        from lrc.model.tpo import sequence_logps

        embeds = self.splice(input_ids, visual)
        if self.heads is not None:
            embeds = self.heads.write_task_embeddings(embeds, input_ids, input_boxes)
        return sequence_logps(self.llm(inputs_embeds=embeds, attention_mask=attention_mask).logits, labels)

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], max_new_tokens: int = 32, eos_id: int | None = None,
                 use_cache: bool = True, sampling: Any = None) -> list[dict[str, Any]]:
        """Answers for every sample of a padded batch, routing to TPO heads as the answer asks.

        Each prompt is the sample's sequence up to its first answer; lrc/model/generation.py generates one
        sample at a time with a key/value cache (``use_cache``), greedy unless ``sampling`` (a
        :class:`lrc.model.generation.Sampling`) says otherwise, dropping visual tokens at prefill when
        ``model.token_dropout`` is on. When the LLM emits a head's routing token (``<box_begin>`` ...), the
        head's task token is appended and the head decodes its last-layer hidden state (paper §3.2).
        Returns per sample ``{"token_ids": [...], "heads": {task: decoded output}}``."""
        from lrc.model.generation import generate

        if is_packed(batch):
            raise ValueError("generate() takes padded batches; packing (data.packing) applies to training only")
        visual_all = self.encode_video(batch["pixel_values"], batch["frames_per_sample"], batch.get("media"))
        frames_all = self.frames(batch["pixel_values"], batch["frames_per_sample"])
        results = []
        for b in range(batch["input_ids"].shape[0]):
            boxes = batch.get("input_boxes")
            out = generate(self, batch["input_ids"][b, : int(batch["answer_start"][b])].tolist(), visual_all[b],
                           frames=frames_all[b], timestamps=batch["timestamps"][b], duration=float(batch["durations"][b]),
                           query_positions=(batch.get("query_positions") or [[]] * (b + 1))[b],
                           input_boxes=boxes[b] if boxes else None, max_new_tokens=max_new_tokens,
                           stop_ids=() if eos_id is None else (eos_id,), sampling=sampling, use_cache=use_cache,
                           sample_id=(batch.get("ids") or ["?"] * (b + 1))[b])
            results.append({"token_ids": out.token_ids, "heads": out.heads})
        return results

    def frames(self, pixel_values: torch.Tensor, frames_per_sample: list[int]) -> list[torch.Tensor]:
        """Per sample, the frames as RGB in [0, 1] (the encoder's normalisation undone), for heads."""
        mean = torch.tensor(self.encoder.mean, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
        std = torch.tensor(self.encoder.std, dtype=pixel_values.dtype, device=pixel_values.device).view(1, 3, 1, 1)
        return list((pixel_values * std + mean).split(frames_per_sample))

    def component_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {name: list(getattr(self, name).parameters()) if getattr(self, name) is not None else []
                for name in COMPONENTS}


def is_packed(batch: dict[str, Any]) -> bool:
    """A packed batch (lrc/data/packing.py) carries per-sample position ids and no attention mask."""
    return batch.get("position_ids") is not None


def per_sample_rows(batch: dict[str, Any], row: torch.Tensor, fill: int) -> torch.Tensor:
    """``[B, N]``: sample b's view of a packed ``[1, N]`` row, every other sample's positions set to
    ``fill``; positions stay row positions, so per-sample code can index it like a padded batch."""
    pos = torch.arange(row.shape[1], device=row.device)
    start = batch["sample_start"].to(row.device).unsqueeze(1)
    inside = (pos >= start) & (pos < start + batch["sample_length"].to(row.device).unsqueeze(1))
    return torch.where(inside, row, torch.full_like(row, fill))


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
    if is_packed(batch):
        raise ValueError("MCQ scoring takes padded batches; packing (data.packing) applies to training only")
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
