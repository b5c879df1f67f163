"""TPO temporal head: a CG-DETR moment-retrieval transformer read from the LLM (paper §3.2, eq. 3).

InternVideo2.5 / TPO ground a question in time with CG-DETR ("Correlation-Guided DETR", Moon et al.
2023). The LLM's last-layer hidden state at the ``<temp>`` task token is appended to the question's
text features, and the head predicts moments (spans) and per-frame saliency from the video. This is
our own, compact rewrite of that design, in the order the data flows:

1. Video tokens. Each sampled frame's feature (the LLM-space visual tokens averaged per frame, [T, D])
   is projected to ``d_model``; two time features per frame, [t/L, (t+dt)/L] with L the duration
   and dt = L/T (CG-DETR feeds [start/L, end/L] of each clip), get their own linear map and are added.
   (CG-DETR concatenates them to the raw feature before a LayerNorm; with an LLM-sized D the two
   scalars would be drowned by the normalisation, so we embed them separately.) Frames carry a sine
   position embedding of t/L, in the same normalised time axis the spans live on.
2. Query tokens. The question's hidden states [Lq, D] are projected to ``d_model`` and the task
   hidden state is appended as one more token with a learned type embedding (TPO appends the task
   embedding to the text query). Lq may be 0: the task token alone is then the query.
3. Dummy tokens (CG-DETR §3.2, "adaptive cross-attention"). ``num_dummies`` learned tokens are first
   encoded together with the query tokens (self-attention over [dummies; query]) so they become
   query-aware, then put in front of the query tokens as extra keys. Each frame attends over
   [dummies; query] with ONE softmax, but only the query tokens' values are summed: a frame that is
   irrelevant to the question can put its attention mass on the dummies and so receives (almost) no
   text, instead of being forced to mix in text it does not match.
4. Encoder. A DETR transformer encoder over [global token; frames]. The global token is a learned
   vector plus the mean query token (CG-DETR builds its sentence-level token from the query too).
   Saliency per frame = <proj(frame), proj(global)> / sqrt(d) (CG-DETR's saliency head), then the
   global token is added to every frame before decoding (as CG-DETR does).
5. Decoder. ``num_queries`` moment queries in the DAB-DETR style CG-DETR uses: each query has a
   learned anchor (centre, width); its positional query is an MLP of the anchor's sine embedding; the
   content starts at zero. Post-norm layers: self-attention between queries, cross-attention to the
   frames, FFN. The output is the anchor refined in logit space, sigmoid((logit anchor) + MLP(h)),
   so spans are (centre, width) normalised to [0, 1] by duration, plus a 2-way logit
   (index 0 = foreground moment, 1 = no object, the Moment-DETR convention).

Losses (Moment-DETR / CG-DETR, weights from TPO's released temporal head): Hungarian matching per sample with
cost span_weight·L1 − giou_weight·GIoU − label_weight·p(foreground); span L1 and 1 − GIoU on matched
pairs; 2-way cross-entropy on all queries with the no-object class weighted by ``eos_weight``; a
margin ranking loss on saliency (every pair of frames whose targets differ, in-span above
out-of-span by ``saliency_margin``). ``"loss"`` is their weighted sum; the paper's overall ×0.05 on the
temporal loss is lrc's per-head weight in YAML, not part of the head.

Left out from CG-DETR, on purpose: auxiliary decoder-layer losses and per-layer anchor refinement,
the moment/non-moment "mcls" encoder, learned saliency prompt tokens and the distillation and
dummy-attention losses (they need negative video-query pairs from a retrieval dataset).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrc.protocols import HeadBatch, check_head_batch
from lrc.constraints import DropoutRate, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lrc.registry import HEADS
from lrc.model.spans import cw_to_se, giou_matrix, grounding_metrics, hungarian_match, paired_giou, se_to_cw

FOREGROUND, NO_OBJECT = 0, 1  # class indices of the 2-way logit


def sine_embed(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of positions in [0, 1] (DETR / DAB-DETR): ``[...] -> [..., dim]``, dim even."""
    half = dim // 2
    freq = 10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = x.float()[..., None] * (2 * math.pi) / freq
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(x.dtype)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> nn.Sequential:
    """Linear layers with ReLU between them (the DETR box-head MLP)."""
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < num_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def pad(tensors: list[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``N × [L_i, ...]`` with zeros → ``([N, Lmax, ...], valid [N, Lmax])`` (True = real)."""
    length = max((t.shape[0] for t in tensors), default=0) if length is None else length
    out = tensors[0].new_zeros((len(tensors), length, *tensors[0].shape[1:]))
    valid = torch.zeros(len(tensors), length, dtype=torch.bool, device=tensors[0].device)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
        valid[i, : t.shape[0]] = True
    return out, valid


class EncoderLayer(nn.Module):
    """DETR post-norm encoder layer: x = LN(x + SelfAttn(x+pos, x+pos, x)); x = LN(x + FFN(x))."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None, padding: torch.Tensor) -> torch.Tensor:
        qk = x if pos is None else x + pos
        x = self.norm1(x + self.drop(self.attn(qk, qk, x, key_padding_mask=padding, need_weights=False)[0]))
        return self.norm2(x + self.drop(self.ffn(x)))


class AdaptiveCrossAttention(nn.Module):
    """CG-DETR's adaptive cross-attention: frames attend over [dummies; query], only query values count.

    Returns the attended text ``[N, T, d]`` and, per frame, the attention mass on the query tokens
    (1 − mass on the dummies) averaged over heads, ``[N, T]``: how much the frame "matches" the query.
    """

    def __init__(self, d_model: int, num_heads: int, num_dummies: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.num_dummies = num_dummies
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, frames: torch.Tensor, keys: torch.Tensor, key_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, d = frames.shape
        h, dh = self.num_heads, d // self.num_heads
        q = self.q_proj(frames).reshape(n, t, h, dh).transpose(1, 2)  # [N, h, T, dh]
        k = self.k_proj(keys).reshape(n, -1, h, dh).transpose(1, 2)  # [N, h, S, dh]
        v = self.v_proj(keys).reshape(n, -1, h, dh).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
        attn = scores.softmax(dim=-1)  # one softmax over dummies AND query tokens ...
        query_mass = attn[..., self.num_dummies:].sum(-1).mean(1)
        attn = self.attn_drop(attn)
        out = attn[..., self.num_dummies:] @ v[:, :, self.num_dummies:]  # ... but only query values are read
        return self.out_proj(out.transpose(1, 2).reshape(n, t, d)), query_mass


class CrossLayer(nn.Module):
    """Post-norm: frames = LN(frames + ACA(frames+pos → [dummies; query])); frames = LN(frames + FFN)."""

    def __init__(self, d_model: int, num_heads: int, num_dummies: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = AdaptiveCrossAttention(d_model, num_heads, num_dummies, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, frames, pos, keys, key_padding) -> tuple[torch.Tensor, torch.Tensor]:
        attended, query_mass = self.attn(frames + pos, keys, key_padding)
        frames = self.norm1(frames + self.drop(attended))
        return self.norm2(frames + self.drop(self.ffn(frames))), query_mass


class DecoderLayer(nn.Module):
    """DETR post-norm decoder layer with positional queries added to queries and keys."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model))
        self.norm3 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, memory, memory_pos, memory_padding) -> torch.Tensor:
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(qk, qk, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, key_padding_mask=memory_padding,
                                   need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop(attended))
        return self.norm3(tgt + self.drop(self.ffn(tgt)))


@HEADS.register("cgdetr")
class CGDETRHead(nn.Module):
    """CG-DETR temporal grounding head (TPO ``<temp>``); see the module docstring for the layers.

    ``forward(batch)`` returns ``spans`` [N, Q, 2] (centre, width) in [0, 1] of the duration,
    ``logits`` [N, Q, 2] (0 = foreground, 1 = no object), ``saliency`` [N, Tmax] (0 at padding),
    ``frame_mask`` [N, Tmax] (True = real frame) and ``query_attention`` [N, Tmax] (per frame, the
    attention mass on the query rather than the dummies, averaged over cross-attention layers).

    Args:
        d_model: width of the moment decoder.
        num_dummy_layers: self-attention layers that encode the dummy tokens together with the query tokens, making them
            query-aware (CG-DETR §3.2).
        num_cross_layers: adaptive cross-attention layers: each frame attends over [dummies; query] with one softmax and
            sums only the query tokens' values.
        num_encoder_layers: transformer encoder layers over [global token; frames].
        num_decoder_layers: transformer decoder layers of the moment queries.
        num_queries: moment queries (candidate spans) per sample.
        num_dummies: dummy tokens the attention can fall back to instead of the query.
        num_heads: attention heads; must divide ``d_model``.
        ffn_dim: width of the feed-forward layers.
        dropout: dropout in every layer, in [0, 1).
        span_weight: weight of the L1 loss on the matched spans (centre, width).
        giou_weight: weight of the generalised temporal IoU loss.
        label_weight: weight of the foreground / no-object classification loss.
        eos_weight: class weight of "no object" in that loss.
        saliency_weight: weight of the saliency (per-frame relevance) loss.
        saliency_margin: margin of the saliency ranking loss.
    """

    task = "temporal"
    task_token = "<temp>"
    begin_token = "<temp_begin>"

    def __init__(
        self,
        hidden_size: PositiveInt,
        d_model: PositiveInt = 256,
        num_dummy_layers: NonNegativeInt = 2,
        num_cross_layers: PositiveInt = 2,
        num_encoder_layers: PositiveInt = 3,
        num_decoder_layers: PositiveInt = 3,
        num_queries: PositiveInt = 10,
        num_dummies: PositiveInt = 45,
        num_heads: PositiveInt = 8,
        ffn_dim: PositiveInt = 1024,
        dropout: DropoutRate = 0.1,
        span_weight: NonNegativeFloat = 10.0,
        giou_weight: NonNegativeFloat = 1.0,
        label_weight: NonNegativeFloat = 4.0,
        eos_weight: PositiveFloat = 0.1,
        saliency_weight: NonNegativeFloat = 4.0,
        saliency_margin: NonNegativeFloat = 0.2,
    ):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        if d_model % num_heads or d_model % 2:
            raise ValueError(
                f"cgdetr: d_model ({d_model}) must be even and divisible by num_heads ({num_heads}); attention splits "
                f"d_model into num_heads equal heads. Change head.d_model or head.num_heads."
            )
        self.hidden_size = hidden_size
        self.d_model = d_model
        self.num_queries = num_queries
        self.num_dummies = num_dummies
        self.span_weight, self.giou_weight, self.label_weight = span_weight, giou_weight, label_weight
        self.saliency_weight, self.saliency_margin = saliency_weight, saliency_margin
        self.eos_weight = eos_weight

        # 1. video tokens: LLM-space frame feature → d_model, plus the 2 time features, embedded apart.
        self.video_proj = nn.Sequential(nn.LayerNorm(hidden_size), nn.Dropout(dropout), nn.Linear(hidden_size, d_model),
                                        nn.ReLU(), nn.LayerNorm(d_model), nn.Dropout(dropout), nn.Linear(d_model, d_model))
        self.time_proj = nn.Linear(2, d_model)
        # 2. query tokens: question hidden states and the task hidden state share one projection (both
        # are LLM last-layer states); a learned type embedding marks the task token.
        self.query_proj = nn.Sequential(nn.LayerNorm(hidden_size), nn.Dropout(dropout), nn.Linear(hidden_size, d_model),
                                        nn.ReLU(), nn.LayerNorm(d_model), nn.Dropout(dropout), nn.Linear(d_model, d_model))
        self.task_type = nn.Parameter(torch.zeros(d_model))
        # 3. dummies, made query-aware by self-attention with the query tokens, then read by the frames.
        self.dummies = nn.Parameter(torch.empty(num_dummies, d_model))
        self.dummy_layers = nn.ModuleList(EncoderLayer(d_model, num_heads, ffn_dim, dropout)
                                          for _ in range(num_dummy_layers))
        self.cross_layers = nn.ModuleList(CrossLayer(d_model, num_heads, num_dummies, ffn_dim, dropout)
                                          for _ in range(num_cross_layers))
        # 4. encoder over [global; frames], and the saliency head reading it.
        self.global_token = nn.Parameter(torch.empty(d_model))
        self.encoder_layers = nn.ModuleList(EncoderLayer(d_model, num_heads, ffn_dim, dropout)
                                            for _ in range(num_encoder_layers))
        self.saliency_frame_proj = nn.Linear(d_model, d_model)
        self.saliency_global_proj = nn.Linear(d_model, d_model)
        # 5. decoder: learned anchors (centre, width) in logit space; positional query = MLP(sine(anchor)).
        self.anchors = nn.Parameter(torch.empty(num_queries, 2))
        self.anchor_pos = mlp(2 * d_model, d_model, d_model, 2)
        self.decoder_layers = nn.ModuleList(DecoderLayer(d_model, num_heads, ffn_dim, dropout)
                                            for _ in range(num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.span_head = mlp(d_model, d_model, 2, 3)
        self.class_head = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.dummies, std=0.02)
        nn.init.trunc_normal_(self.global_token, std=0.02)
        # Anchors tile the timeline (centres (i+½)/Q) so that at the start every ground-truth moment
        # has a nearby query for the Hungarian matching; CG-DETR starts from random anchors instead.
        centres = (torch.arange(self.num_queries, dtype=torch.float32) + 0.5) / self.num_queries
        widths = torch.full_like(centres, 0.25)
        with torch.no_grad():
            self.anchors.copy_(inverse_sigmoid(torch.stack((centres, widths), dim=-1)))
        # The span head starts at zero, so initial predictions are exactly the anchors (DAB-DETR).
        nn.init.zeros_(self.span_head[-1].weight)
        nn.init.zeros_(self.span_head[-1].bias)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, d_model={self.d_model}, num_queries={self.num_queries}"

    # ---------------------------------------------------------------------------------------------
    def forward(self, batch: HeadBatch) -> dict[str, torch.Tensor]:
        self._check_batch(batch)
        n = len(batch)
        device, dtype = self.anchors.device, self.anchors.dtype

        # 1. video tokens with time features [t/L, (t+dt)/L], dt = L/T
        frames, frame_mask = pad([f.to(device, dtype) for f in batch.frame_features])
        times, _ = pad([t.to(device, dtype) for t in batch.timestamps])
        durations = batch.durations.to(device, dtype)
        t_norm = times / durations[:, None]
        dt_norm = 1.0 / frame_mask.sum(1, keepdim=True).to(dtype)
        time_features = torch.stack((t_norm, t_norm + dt_norm), dim=-1) * frame_mask[..., None]
        video = self.video_proj(frames) + self.time_proj(time_features)
        video_pos = sine_embed(t_norm, self.d_model) * frame_mask[..., None]
        frame_padding = ~frame_mask

        # 2. query tokens: [question ; task] (TPO appends the task embedding to the text query)
        if max(q.shape[0] for q in batch.query_hidden) > 0:
            text, text_mask = pad([q.to(device, dtype) for q in batch.query_hidden])
            text = self.query_proj(text)
        else:  # no sample has question tokens
            text = video.new_zeros(n, 0, self.d_model)
            text_mask = torch.zeros(n, 0, dtype=torch.bool, device=device)
        task = self.query_proj(batch.task_hidden.to(device, dtype)) + self.task_type
        query = torch.cat((text, task[:, None]), dim=1)
        query_mask = torch.cat((text_mask, text_mask.new_ones(n, 1)), dim=1)

        # 3. dummies conditioned on the query, then adaptive cross-attention frames → [dummies; query]
        dummies = self.dummies.expand(n, -1, -1)
        key_padding = torch.cat((query_mask.new_zeros(n, self.num_dummies), ~query_mask), dim=1)
        joint = torch.cat((dummies, query), dim=1)
        for layer in self.dummy_layers:
            joint = layer(joint, None, key_padding)
        keys = torch.cat((joint[:, : self.num_dummies], query), dim=1)  # query tokens keep their own features
        query_mass = video.new_zeros(video.shape[:2])
        for layer in self.cross_layers:
            video, mass = layer(video, video_pos, keys, key_padding)
            query_mass = query_mass + mass / len(self.cross_layers)

        # 4. encoder over [global; frames]; saliency = <frame, global>
        weights = query_mask[..., None].to(dtype)
        global_token = self.global_token + (query * weights).sum(1) / weights.sum(1)
        x = torch.cat((global_token[:, None], video), dim=1)
        pos = torch.cat((video_pos.new_zeros(n, 1, self.d_model), video_pos), dim=1)
        padding = torch.cat((frame_padding.new_zeros(n, 1), frame_padding), dim=1)
        for layer in self.encoder_layers:
            x = layer(x, pos, padding)
        memory_global, memory = x[:, 0], x[:, 1:]
        saliency = (self.saliency_frame_proj(memory) * self.saliency_global_proj(memory_global)[:, None]).sum(-1)
        saliency = (saliency / math.sqrt(self.d_model)).masked_fill(frame_padding, 0.0)
        memory = memory + memory_global[:, None]

        # 5. decoder: moment queries from learned anchors, refined once at the output
        anchors = self.anchors.sigmoid()
        query_pos = self.anchor_pos(torch.cat((sine_embed(anchors[:, 0], self.d_model),
                                               sine_embed(anchors[:, 1], self.d_model)), dim=-1))
        query_pos = query_pos.expand(n, -1, -1)
        tgt = video.new_zeros(n, self.num_queries, self.d_model)
        for layer in self.decoder_layers:
            tgt = layer(tgt, query_pos, memory, video_pos, frame_padding)
        tgt = self.decoder_norm(tgt)
        spans = (self.anchors + self.span_head(tgt)).sigmoid()
        return {
            "spans": spans,
            "logits": self.class_head(tgt),
            "saliency": saliency,
            "frame_mask": frame_mask,
            "query_attention": query_mass.masked_fill(frame_padding, 0.0),
        }

    # ---------------------------------------------------------------------------------------------
    def loss(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> dict[str, torch.Tensor]:
        # Loss arithmetic in float32 whatever the head's dtype (bf16 L1/GIoU/softmax lose the small terms).
        spans, logits = predictions["spans"].float(), predictions["logits"].float()
        saliency = predictions["saliency"].float()
        n = spans.shape[0]
        gt_spans, gt_saliency = self._targets(batch, spans.device, torch.float32)

        # Hungarian matching per sample (DETR); the cost uses the same three terms as the loss.
        prob_fg = logits.softmax(-1)[..., FOREGROUND]
        matches = []
        with torch.no_grad():
            for i in range(n):
                l1 = (spans[i][:, None, :] - gt_spans[i][None, :, :]).abs().sum(-1)  # [Q, K]
                cost = (self.span_weight * l1
                        - self.giou_weight * giou_matrix(cw_to_se(spans[i]), cw_to_se(gt_spans[i]))
                        - self.label_weight * prob_fg[i][:, None])
                matches.append(hungarian_match(cost))

        zero = spans.sum() * 0.0  # keeps the graph (and the device) when a term has nothing to average
        pred = torch.cat([spans[i][p] for i, (p, _) in enumerate(matches)])
        gt = torch.cat([gt_spans[i][g] for i, (_, g) in enumerate(matches)])
        if pred.shape[0]:
            loss_span = F.l1_loss(pred, gt)  # mean over matched pairs and (centre, width), as Moment-DETR
            loss_giou = (1 - paired_giou(cw_to_se(pred), cw_to_se(gt))).mean()
        else:
            loss_span = loss_giou = zero

        classes = torch.full(logits.shape[:2], NO_OBJECT, dtype=torch.long, device=logits.device)
        for i, (p, _) in enumerate(matches):
            classes[i, p] = FOREGROUND
        # The many unmatched queries ("no object") count eos_weight each, so they don't swamp the matched ones.
        class_weight = torch.tensor([1.0, self.eos_weight], device=logits.device)
        loss_label = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), weight=class_weight,
                                     reduction="none").mean()

        # Saliency margin ranking: every frame pair whose targets differ, the higher target ranks higher.
        terms = []
        for i in range(n):
            s, y = saliency[i, : gt_saliency[i].shape[0]], gt_saliency[i]
            ordered = y[:, None] > y[None, :]
            if ordered.any():
                terms.append(F.relu(self.saliency_margin - (s[:, None] - s[None, :]))[ordered].mean())
            else:  # no in-span or no out-of-span frame: nothing to rank
                terms.append(zero)
        loss_saliency = torch.stack(terms).mean() if terms else zero

        total = (self.span_weight * loss_span + self.giou_weight * loss_giou + self.label_weight * loss_label
                 + self.saliency_weight * loss_saliency)
        return {"loss_span": loss_span, "loss_giou": loss_giou, "loss_label": loss_label,
                "loss_saliency": loss_saliency, "loss": total}

    @torch.no_grad()
    def decode(self, predictions: dict[str, torch.Tensor], batch: HeadBatch) -> list[dict[str, Any]]:
        """Per sample: ``spans`` [[start_s, end_s], ...] by descending score, clipped to [0, duration];
        ``scores`` (foreground probability); ``saliency`` per sampled frame."""
        scores = predictions["logits"].float().softmax(-1)[..., FOREGROUND]
        durations = batch.durations.to(scores.device, torch.float32)
        seconds = cw_to_se(predictions["spans"].float()) * durations[:, None, None]
        counts = predictions["frame_mask"].sum(1).tolist()
        out = []
        for i in range(scores.shape[0]):
            order = scores[i].argsort(descending=True)
            clipped = torch.minimum(seconds[i][order].clamp(min=0.0), durations[i])
            out.append({
                "spans": clipped.tolist(),
                "scores": scores[i][order].tolist(),
                "saliency": predictions["saliency"][i, : counts[i]].float().tolist(),
            })
        return out

    def metrics(self, outputs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, list[float]]:
        """R1@IoU 0.3/0.5/0.7 (1.0 / 0.0) and IoU (``miou``) of each sample's top-1 span, in seconds."""
        top1 = [o["spans"][0] if len(o.get("spans", [])) else None for o in outputs]
        return grounding_metrics(top1, [t["spans"] for t in targets])

    # ---------------------------------------------------------------------------------------------
    def _check_batch(self, batch: HeadBatch) -> None:
        n = check_head_batch("cgdetr", batch, self.hidden_size, ("frame_features", "timestamps", "query_hidden"))
        if batch.durations.shape != (n,):
            raise ValueError(f"cgdetr: durations must be [N={n}], got {tuple(batch.durations.shape)}")
        for i in range(n):
            where = f"cgdetr: sample {batch.ids[i] if i < len(batch.ids) else i}"
            f, t, q = batch.frame_features[i], batch.timestamps[i], batch.query_hidden[i]
            if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] != self.hidden_size:
                raise ValueError(f"{where}: frame_features must be [T >= 1, {self.hidden_size}], got {tuple(f.shape)}")
            if t.shape != (f.shape[0],):
                raise ValueError(f"{where}: timestamps must be [T={f.shape[0]}] seconds, got {tuple(t.shape)}")
            if q.ndim != 2 or q.shape[1] != self.hidden_size:
                raise ValueError(f"{where}: query_hidden must be [Lq, {self.hidden_size}] (Lq may be 0), "
                                 f"got {tuple(q.shape)}")
            if not float(batch.durations[i]) > 0:
                raise ValueError(f"{where}: duration must be > 0 seconds, got {float(batch.durations[i])}")

    def _targets(self, batch: HeadBatch, device: torch.device, dtype: torch.dtype):
        """GT spans as (centre, width) normalised by duration, and per-frame saliency targets."""
        if len(batch.targets) != len(batch):
            raise ValueError(f"cgdetr: loss needs one target dict per sample, got {len(batch.targets)} for {len(batch)} "
                             "samples (lrc.data.tasks.task_targets builds them from the record's spans)")
        spans, saliency = [], []
        for i, target in enumerate(batch.targets):
            where = f"cgdetr: sample {batch.ids[i] if i < len(batch.ids) else i}"
            if "spans" not in target:
                raise ValueError(f"{where}: targets have no 'spans' ([K, 2] seconds); keys present: {sorted(target)}")
            se = torch.as_tensor(target["spans"], dtype=dtype, device=device).reshape(-1, 2)
            if (se[:, 1] < se[:, 0]).any():
                raise ValueError(f"{where}: a target span ends before it starts: {se.tolist()}")
            duration = float(batch.durations[i])
            spans.append(se_to_cw((se / duration).clamp(0.0, 1.0)))
            frames = batch.frame_features[i].shape[0]
            if "saliency" not in target:
                raise ValueError(f"{where}: targets have no 'saliency' ([T] per sampled frame, built by "
                                 f"lrc.data.tasks.task_targets); keys present: {sorted(target)}")
            y = torch.as_tensor(target["saliency"], dtype=dtype, device=device).reshape(-1)
            if y.shape[0] != frames:
                raise ValueError(f"{where}: saliency target has {y.shape[0]} values for {frames} sampled frames")
            saliency.append(y)
        return spans, saliency
