"""HiCo level 1 baseline: a BLIP-2-style Q-Former that reads each clip through learned queries.

InternVideo2.5 (paper §3.2, "HiCo") compares clip-level token merging with pooling, an MLP and a
Q-Former as the level-1 compressor. This is the Q-Former arm (BLIP-2, Li et al. 2023): a small
transformer whose only sequence is a fixed set of learned queries, which read the visual tokens by
cross-attention. Here it runs per clip, so the count is exact by construction:

* Queries. ``clip_len·tokens_per_frame`` learned vectors per clip (shared by all clips).
* Keys/values. The clip's ``clip_len·M`` encoder tokens, projected ``in_dim → hidden_dim``, plus a
  learned temporal embedding per frame-in-clip (without it the cross-attention is blind to frame
  order within the clip), then LayerNorm.
* Layer (× ``num_layers``, pre-norm residuals): self-attention over the queries → cross-attention
  from the queries to the clip's tokens → MLP (``mlp_ratio·hidden_dim``, GELU). A final LayerNorm.
* Frame preference. Query group ``f`` (queries ``f·tokens_per_frame … (f+1)·tokens_per_frame − 1``)
  gets a learned additive bias, one scalar per layer, on its cross-attention logits to frame ``f``'s
  tokens. It starts at 0 (no preference) and is learned.

Output order. Output token ``j`` of a clip is query ``j`` and is assigned to frame
``j // tokens_per_frame`` by its position only: queries are not tied to frames, every query may
attend to every frame of its clip, and only the learned frame bias above nudges group ``f`` towards
frame ``f``. The "FrameN:" text of the prompt therefore labels query groups, not frame contents.

``out_dim = hidden_dim``; the projector maps onward to the LLM.
"""

from __future__ import annotations

import torch
from torch import nn

from lrc.constraints import DropoutRate, PositiveFloat, PositiveInt
from lrc.protocols import check_clip_tokens
from lrc.registry import COMPRESSORS


class QFormerLayer(nn.Module):
    """Pre-norm: queries += SelfAttn(LN q); queries += CrossAttn(LN q, kv); queries += MLP(LN q)."""

    def __init__(self, hidden_dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(hidden_dim)
        self.self_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(hidden_dim)
        self.cross_attn = nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        # Learned preference of query group f for frame f (see the module docstring); 0 = none.
        self.frame_bias = nn.Parameter(torch.zeros(()))
        self.norm_mlp = nn.LayerNorm(hidden_dim)
        mlp_dim = max(1, round(hidden_dim * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, hidden_dim),
            nn.Dropout(dropout),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, same_frame: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(q)
        q = q + self.drop(self.self_attn(h, h, h, need_weights=False)[0])
        h = self.norm_cross(q)
        # A float mask is added to the attention logits: +frame_bias where query group == key frame.
        bias = (self.frame_bias * same_frame).to(h.dtype)
        q = q + self.drop(self.cross_attn(h, kv, kv, attn_mask=bias, need_weights=False)[0])
        return q + self.mlp(self.norm_mlp(q))


@COMPRESSORS.register("qformer")
class QFormerCompressor(nn.Module):
    """Read each clip of ``clip_len`` frames with ``clip_len·tokens_per_frame`` learned queries.

    ``forward(tokens [B, T, M, in_dim]) -> [B, T·tokens_per_frame, hidden_dim]``; ``T`` must be a
    multiple of ``clip_len``. Learnable; ``out_dim == hidden_dim``. See the module docstring for the
    layers and for what "output token j belongs to frame j // tokens_per_frame" means here.

    Args:
        clip_len: frames per clip; the video's frame count must be a multiple of it.
        tokens_per_frame: learned queries per frame: a clip is read by ``clip_len·tokens_per_frame`` queries
            (self-attention, cross-attention to the clip's tokens, MLP), BLIP-2 style.
        hidden_dim: width of the queries and of the output tokens (the compressor's ``out_dim``).
        num_layers: Q-Former blocks.
        num_heads: attention heads per block; must divide ``hidden_dim``.
        mlp_ratio: the blocks' MLP width as a multiple of ``hidden_dim``.
        dropout: dropout in the blocks, in [0, 1).
    """

    def __init__(
        self,
        in_dim: PositiveInt,
        clip_len: PositiveInt = 4,
        tokens_per_frame: PositiveInt = 16,
        hidden_dim: PositiveInt = 256,
        num_layers: PositiveInt = 2,
        num_heads: PositiveInt = 4,
        mlp_ratio: PositiveFloat = 4.0,
        dropout: DropoutRate = 0.0,
    ):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(
                f"qformer: hidden_dim ({hidden_dim}) is not divisible by num_heads ({num_heads}); attention splits "
                f"hidden_dim into num_heads equal heads. Set compressor.num_heads to a divisor of {hidden_dim} "
                f"or compressor.hidden_dim to a multiple of {num_heads}."
            )
        self.in_dim = in_dim
        self.clip_len = clip_len
        self.tokens_per_frame = tokens_per_frame
        self.hidden_dim = hidden_dim
        self.out_dim = hidden_dim

        self.queries = nn.Parameter(torch.empty(clip_len * tokens_per_frame, hidden_dim))
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.frame_embed = nn.Parameter(torch.empty(clip_len, hidden_dim))  # temporal position in the clip
        self.input_norm = nn.LayerNorm(hidden_dim)
        self.layers = nn.ModuleList(QFormerLayer(hidden_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(hidden_dim)
        nn.init.trunc_normal_(self.queries, std=0.02)
        nn.init.trunc_normal_(self.frame_embed, std=0.02)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, clip_len={self.clip_len}, tokens_per_frame={self.tokens_per_frame}"

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, m, d = check_clip_tokens("qformer", tokens, self.in_dim, self.clip_len)
        n = b * (t // self.clip_len)  # clips, folded into the batch: each is read independently
        kv = self.input_proj(tokens.reshape(n, self.clip_len, m, d)) + self.frame_embed[:, None]
        kv = self.input_norm(kv.reshape(n, self.clip_len * m, self.hidden_dim))

        # same_frame[i, s] = 1 where query i's group (i // k) is key s's frame (s // M).
        query_frame = torch.arange(self.queries.shape[0], device=tokens.device) // self.tokens_per_frame
        key_frame = torch.arange(self.clip_len * m, device=tokens.device) // m
        same_frame = (query_frame[:, None] == key_frame[None, :]).to(kv.dtype)

        q = self.queries.to(kv.dtype).expand(n, -1, -1)
        for layer in self.layers:
            q = layer(q, kv, same_frame)
        return self.norm_out(q).reshape(b, t * self.tokens_per_frame, self.hidden_dim)
