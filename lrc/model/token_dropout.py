"""HiCo level 2: multimodal token dropout inside the LLM (paper §3.1, eq. 2; the released VideoChat-Flash code).

Before chosen decoder layers, visual tokens are dropped so that only ``ratio × (original visual
count)`` of each sample's visual tokens go on through the deeper layers. Text tokens are never
dropped. How the kept set is chosen:

* ``uniform`` — evenly spaced over the sample's current visual tokens, first to last (the paper's
  "uniform pruning in early layers"; VideoChat-Flash's ``linspace`` rule);
* ``attention`` — the visual tokens that the *query tokens* attend to most. Attention is recomputed
  with the next layer's own input norm, q/k projections and rotary embedding (so no attention matrix
  has to be materialised by the layers themselves); scores are averaged over heads and queries;
  the top-k are kept in their original order. Query tokens are the token just before each answer span
  (where the answer is predicted from) in training and teacher-forced evaluation, and the last
  prompt token when there is no answer;
* ``uniform_then_attention`` — ``uniform`` at the first ``uniform_stages`` drop layers, ``attention``
  after (VideoChat-Flash's ``uniform0_attention``, its model card's inference example);
* ``bernoulli: true`` — in training only, each current visual token survives an independent draw with
  probability ``target / current`` (eq. 2, p ~ Bernoulli), so the number kept varies from step to step
  around the schedule's count; *which* tokens are kept is still the mode's choice (evenly spaced, or the
  top ones by the query's attention), so training and evaluation select the same way.

After a drop the sequence is compacted and position ids restart contiguously (0..L'−1), as in
VideoChat-Flash. The forward runs the decoder layers of a transformers Llama-family model one by one
(Llama, Qwen2, Qwen3, Mistral, InternLM3 ...: ``get_decoder()`` with ``layers``, ``norm``,
``rotary_emb``; layers with ``input_layernorm`` and ``self_attn.q_proj/k_proj``), building masks with
transformers' own ``create_causal_mask``; with every ratio at 1.0 it is the plain forward.

Generation (lrc/model/generation.py) drops at prefill only, as VideoChat-Flash does: the prompt is read once
with the drops, each layer's key/value cache keeps that layer's (shorter) sequence, and every new token is
placed, layer by layer, right after what that layer has cached (:func:`decode_step`), which is the
reference's position shift by the number of visual tokens dropped before the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# the schedule (layers, ratios, mode, ...) is the config's model.token_dropout block: one dataclass, in the schema
from lrc.config.schema import TokenDropout


@dataclass
class DropoutOutput:
    logits: torch.Tensor  # [B, L', V]
    kept: torch.Tensor  # [B, L'] original position of each kept token, -1 for padding
    hidden: torch.Tensor | None = None  # [B, L', D] last-layer hidden states (after the final norm)


def decoder_parts(hf_model: nn.Module) -> Any:
    """The decoder stack of a Llama-family causal LM (also through a peft wrapper)."""
    model = hf_model.get_base_model() if hasattr(hf_model, "get_base_model") else hf_model
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    needed = ("layers", "norm", "rotary_emb")
    if decoder is None or not all(hasattr(decoder, n) for n in needed):
        raise ValueError(f"token dropout needs a Llama-family decoder (layers, norm, rotary_emb); "
                         f"{type(model).__name__} does not have one. Disable model.token_dropout for this LLM.")
    layer = decoder.layers[0]
    if not (hasattr(layer, "input_layernorm") and hasattr(layer.self_attn, "q_proj") and hasattr(layer.self_attn, "k_proj")):
        raise ValueError(f"token dropout: decoder layer {type(layer).__name__} lacks input_layernorm / "
                         "self_attn.q_proj / k_proj; disable model.token_dropout for this LLM")
    return model, decoder


def _masks(decoder: nn.Module, embeds: torch.Tensor, attn2d: torch.Tensor, position_ids: torch.Tensor) -> dict:
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    import inspect

    # no cache here: the masks cover the current sequence (transformers 5 names the argument `cache`)
    empty = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
    kwargs = dict(config=decoder.config, inputs_embeds=embeds, attention_mask=attn2d, position_ids=position_ids,
                  **{empty: None})
    masks = {"full_attention": create_causal_mask(**kwargs)}
    if getattr(decoder, "has_sliding_layers", False):
        masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
    return masks


def _positions(length: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.arange(length, device=device).unsqueeze(0).expand(batch, -1)


def query_positions(labels: torch.Tensor | None, attn2d: torch.Tensor) -> list[list[int]]:
    """Per sample: the token before each answer span, or the last real token if there is none."""
    out = []
    for b in range(attn2d.shape[0]):
        found: list[int] = []
        if labels is not None:
            is_answer = labels[b] != -100
            starts = (is_answer[1:] & ~is_answer[:-1]).nonzero().flatten()
            found = starts.tolist()  # index p where labels[p+1] starts a span: p predicts it
        if not found:
            found = [int(attn2d[b].sum()) - 1]
        out.append(found)
    return out


def attention_scores(layer: nn.Module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     queries: list[int], visual: torch.Tensor) -> torch.Tensor:
    """Mean attention (over heads and queries) from ``queries`` to the ``visual`` positions of one sample.

    ``hidden`` is ``[L, D]`` (one sample); the next layer's norm, projections and rotary embedding are
    applied as that layer would, and the softmax runs over every key the query may see (causal).
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attn = layer.self_attn
    x = layer.input_layernorm(hidden.unsqueeze(0))
    head_dim = attn.head_dim
    q = attn.q_proj(x[:, queries]).view(1, len(queries), -1, head_dim).transpose(1, 2)
    k = attn.k_proj(x).view(1, x.shape[1], -1, head_dim).transpose(1, 2)
    if hasattr(attn, "q_norm"):  # Qwen3-style per-head q/k norms
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, _ = apply_rotary_pos_emb(q, q, cos[:, queries], sin[:, queries])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query attention
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)  # [1, H, Q, L]
    key_pos = torch.arange(x.shape[1], device=x.device)
    causal = key_pos.view(1, 1, 1, -1) > torch.tensor(queries, device=x.device).view(1, 1, -1, 1)
    probs = scores.float().masked_fill(causal, float("-inf")).softmax(-1)
    return probs[0, :, :, visual].mean(dim=(0, 1))


def select(method: str, keep: int, visual: torch.Tensor, scores: torch.Tensor | None,
           bernoulli: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Positions (sorted) of the visual tokens to keep out of ``visual`` (positions, sorted)."""
    n = visual.numel()
    if keep >= n:
        return visual
    if bernoulli:
        # eq. 2: every token survives a Bernoulli(keep / n) draw, so the count varies around `keep`; the
        # mode below still decides which tokens those are (attention-guided in training as in evaluation)
        keep = int((torch.rand(n, generator=generator, device=visual.device) < keep / n).sum())
    if method == "uniform":
        # evenly spaced from the first to the last current visual token, as VideoChat-Flash's uniform drop
        # (torch.linspace(0, n - 1, keep) truncated to whole positions)
        idx = torch.linspace(0, n - 1, keep, device=visual.device).long()
        return visual[idx]
    top = scores.topk(keep).indices
    return visual[top.sort().values]


def cache_arguments(layer: nn.Module, cache: Any) -> dict[str, Any]:
    """A decoder layer's keyword arguments for a key/value cache (``cache`` in transformers 5, before that
    ``past_key_values`` / ``past_key_value``)."""
    if cache is None:
        return {}
    import inspect

    params = inspect.signature(layer.forward).parameters
    for name in ("cache", "past_key_values", "past_key_value"):
        if name in params:
            return {name: cache, "use_cache": True}
    raise ValueError(f"decoder layer {type(layer).__name__} takes no key/value cache argument; generate with "
                     "use_cache=False")


def forward_with_token_dropout(
    hf_model: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    visual_mask: torch.Tensor,
    schedule: TokenDropout,
    labels: torch.Tensor | None = None,
    training: bool = False,
    queries: list[list[int]] | None = None,
    cache: Any = None,
) -> DropoutOutput:
    """``queries``: per sample, the positions whose attention chooses the kept tokens (default: the token before
    each answer, else the last real token; generation fixes them at the prompt's end). ``cache``: a
    transformers key/value cache to fill (one sample: generation's prefill)."""
    if cache is not None and inputs_embeds.shape[0] != 1:
        raise ValueError("token dropout with a key/value cache reads one sequence at a time")
    model, decoder = decoder_parts(hf_model)
    batch, length, _ = inputs_embeds.shape
    device = inputs_embeds.device
    hidden = inputs_embeds
    attn2d = attention_mask.long()
    kept = _positions(length, batch, device).clone()  # original position of each current token
    original_visual = visual_mask.sum(dim=1).tolist()
    queries = [list(q) for q in queries] if queries is not None else query_positions(labels, attn2d)
    position_ids = _positions(length, batch, device)
    masks = _masks(decoder, hidden, attn2d, position_ids)
    cos_sin = decoder.rotary_emb(hidden, position_ids)
    drop_at = dict(zip(schedule.layers, schedule.ratios))
    stage = 0
    layer_types = getattr(decoder.config, "layer_types", None) or ["full_attention"] * len(decoder.layers)

    for i, layer in enumerate(decoder.layers[: decoder.config.num_hidden_layers]):
        if i in drop_at:
            method = schedule.method(stage)
            rows, new_kept, new_queries = [], [], []
            for b in range(batch):
                real = attn2d[b].bool()
                is_visual = visual_mask[b] & real
                visual_pos = is_visual.nonzero().flatten()
                target = int(round(drop_at[i] * original_visual[b]))
                scores = None
                if method == "attention" and target < visual_pos.numel():
                    cos, sin = cos_sin
                    scores = attention_scores(layer, hidden[b], cos[b:b + 1] if cos.shape[0] > 1 else cos,
                                              sin[b:b + 1] if sin.shape[0] > 1 else sin, queries[b], visual_pos)
                keep_visual = select(method, target, visual_pos, scores, schedule.bernoulli and training)
                keep = torch.zeros_like(real)
                keep[keep_visual] = True
                keep |= real & ~is_visual  # every text token stays
                pos = keep.nonzero().flatten()
                rows.append(pos)
                # query positions move with the compaction
                new_index = torch.cumsum(keep.long(), 0) - 1
                new_queries.append([int(new_index[q]) for q in queries[b]])
            new_len = max(r.numel() for r in rows)
            gathered = hidden.new_zeros(batch, new_len, hidden.shape[-1])
            new_attn = attn2d.new_zeros(batch, new_len)
            new_vis = visual_mask.new_zeros(batch, new_len)
            kept_next = kept.new_full((batch, new_len), -1)
            for b, pos in enumerate(rows):
                gathered[b, : pos.numel()] = hidden[b, pos]
                new_attn[b, : pos.numel()] = 1
                new_vis[b, : pos.numel()] = visual_mask[b, pos]
                kept_next[b, : pos.numel()] = kept[b, pos]
            hidden, attn2d, visual_mask, kept, queries = gathered, new_attn, new_vis, kept_next, new_queries
            position_ids = _positions(new_len, batch, device)  # contiguous again after the drop
            masks = _masks(decoder, hidden, attn2d, position_ids)
            cos_sin = decoder.rotary_emb(hidden, position_ids)
            stage += 1
        hidden = layer(hidden, attention_mask=masks[layer_types[i]], position_embeddings=cos_sin,
                       position_ids=position_ids, **cache_arguments(layer, cache))
        if isinstance(hidden, tuple):  # older transformers return (hidden, ...)
            hidden = hidden[0]
    hidden = decoder.norm(hidden)
    logits = model.lm_head(hidden)
    return DropoutOutput(logits=logits, kept=kept, hidden=hidden)


def decode_step(hf_model: nn.Module, inputs_embeds: torch.Tensor, cache: Any) -> DropoutOutput:
    """One new token ``[1, 1, D]`` after a prefill with token dropout: at each layer it takes the position right
    after that layer's cached sequence (contiguous positions after the drops, as at prefill) and attends to
    everything cached there. Returns its logits ``[1, 1, V]`` and last-layer hidden state."""
    if inputs_embeds.shape[:2] != (1, 1):
        raise ValueError(f"decode_step takes one new token [1, 1, D], got {tuple(inputs_embeds.shape)}")
    model, decoder = decoder_parts(hf_model)
    hidden = inputs_embeds
    for i, layer in enumerate(decoder.layers[: decoder.config.num_hidden_layers]):
        position_ids = torch.full((1, 1), cache.get_seq_length(i), dtype=torch.long, device=hidden.device)
        hidden = layer(hidden, attention_mask=None, position_embeddings=decoder.rotary_emb(hidden, position_ids),
                       position_ids=position_ids, **cache_arguments(layer, cache))
        if isinstance(hidden, tuple):
            hidden = hidden[0]
    hidden = decoder.norm(hidden)
    return DropoutOutput(logits=model.lm_head(hidden), kept=torch.zeros(1, 1, dtype=torch.long), hidden=hidden)
