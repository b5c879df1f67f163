"""HiCo level 1: clip-level token merging (ToMe-style bipartite soft matching).

InternVideo2.5 (paper §3.2, "HiCo") compresses each clip of ``clip_len`` frames from
``clip_len·M`` visual tokens to ``clip_len·tokens_per_frame`` with a non-learnable token merge,
chosen over pooling, an MLP and a Q-Former. The released 8B model merges 4 frames × 256 tokens
(dim 4096, after pixel shuffle) down to 64 tokens, before the MLP projector. The behaviour follows
VideoChat-Flash's ``merge_tokens`` / ``bipartite_soft_matching`` (projector ``tome16_mlp_hd64``):

* Schedule. Merging removes at most half of the tokens per step, so an exact count is reached by
  repeating ``r = p − target if p − target ≤ p//2 else p//2`` (see :func:`merge_schedule`).
* One step. The similarity metric is NOT the ViT keys of the original ToMe: each token's features
  are split into groups of ``head_dim`` and averaged over the groups, then L2-normalised. Set A is
  the even positions, set B the odd positions of the clip's flattened (t, h, w) sequence, so matches
  span space and time. Every A token picks its most similar B token; the ``r`` A tokens with the
  highest best-score are merged into their partners. The merged value is the size-weighted mean,
  with sizes (how many input tokens a token stands for) carried across steps. No token is protected.
* Gradients flow through the merged values (the weighted averages); the matching itself is
  discrete and computed without gradient, as in the reference.

Output order — the one deliberate difference from the reference. After each step the reference
returns ``[unmerged A tokens in descending-score order, then all B tokens]`` and never restores the
spatio-temporal order, so after four steps the LLM sees the clip's tokens in an order with no
relation to time or space. With ``restore_order=True`` (default) we remember, for every surviving
token, the smallest original (t, h, w) index among the tokens merged into it, and emit the clip's
tokens sorted by that index. Output token ``i`` of a clip then comes roughly from frame
``i // tokens_per_frame``, which keeps the "FrameN:" text and any positional signal meaningful.
``restore_order=False`` reproduces the reference order exactly (for loading released weights
trained with it, or for ablation).

Other small differences, for robustness only: ties are broken deterministically (first best B
token; a stable sort over scores, so the earlier A token wins), the similarity metric is accumulated
and compared in float32 whatever the input dtype (it is ``head_dim`` wide, so this costs little), and an
all-zero token gets a zero metric instead of NaN.

Precision of the merge itself. The size-weighted sums run in the input dtype, as in the reference, for
float32, float64 and bfloat16: bfloat16 has float32's range and the sizes (whole numbers up to the clip's
token count) are exact in it, so the merge costs no float32 copy of the clip (the reference's memory, a
small multiple of the input) and differs from the float32 path by bfloat16 rounding only. float16 has a
narrow range (a sum of sizes × values can overflow past 65504), so its sums run in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lrc.constraints import PositiveInt
from lrc.protocols import check_clip_tokens
from lrc.registry import COMPRESSORS


def merge_schedule(num_tokens: int, target: int) -> list[int]:
    """How many tokens each bipartite step removes to go from ``num_tokens`` to exactly ``target``.

    A step can remove at most half of the current tokens (each A token merges into one B token), so
    we halve until the remainder fits in one step: 784→64 is [392, 196, 98, 34], 1024→64 is
    [512, 256, 128, 64]. ``num_tokens == target`` gives ``[]``.
    """
    if target < 1:
        raise ValueError(f"merge_schedule: target must be >= 1, got {target}")
    if num_tokens < target:
        raise ValueError(f"merge_schedule: cannot merge {num_tokens} tokens up to {target}; merging only removes tokens")
    removals: list[int] = []
    p = num_tokens
    while p > target:
        r = p - target if p - target <= p // 2 else p // 2
        removals.append(r)
        p -= r
    return removals


def _bipartite_merge_step(
    x: torch.Tensor, size: torch.Tensor, origin: torch.Tensor, r: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remove ``r`` tokens from every row of ``x [N, p, D]`` by one round of bipartite soft matching.

    ``size [N, p, 1]`` (float32) counts the input tokens each token stands for; ``origin [N, p]``
    (int64) is the smallest original index among them. Returns all three for the ``p − r`` survivors
    in the reference order ``[unmerged A by descending score, then B]``.
    """
    n, p, d = x.shape
    # Matching: discrete, so no gradient (as in the reference). The group mean accumulates in (at least)
    # float32 straight from x, without a float32 copy of x.
    with torch.no_grad():
        metric_dtype = torch.promote_types(x.dtype, torch.float32)
        metric = x.detach().reshape(n, p, d // head_dim, head_dim).mean(dim=2, dtype=metric_dtype)
        metric = F.normalize(metric, dim=-1)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # [N, |A|, |B|] cosine similarity
        best_b = scores.argmax(dim=-1)  # first maximum on ties
        best_score = scores.gather(-1, best_b[..., None]).squeeze(-1)
        rank = torch.sort(best_score, dim=-1, descending=True, stable=True).indices  # [N, |A|]
        src = rank[:, :r]  # A tokens that merge away
        unm = rank[:, r:]  # A tokens that stay
        dst = best_b.gather(-1, src)  # their B partners

    def pick(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))

    # Size-weighted mean: sum (value × size) into the partner, sum the sizes, divide (module docstring:
    # in the input dtype except float16). Sizes stay float32 between steps.
    acc = torch.float32 if x.dtype == torch.float16 else x.dtype
    weighted = x.to(acc) * size.to(acc)
    a_w, b_w = weighted[:, ::2], weighted[:, 1::2]
    a_s, b_s = size[:, ::2], size[:, 1::2]
    b_w = b_w.scatter_add(1, dst[..., None].expand(-1, -1, d), pick(a_w, src))
    b_s = b_s.scatter_add(1, dst[..., None], pick(a_s, src))
    new_w = torch.cat([pick(a_w, unm), b_w], dim=1)
    new_size = torch.cat([pick(a_s, unm), b_s], dim=1)

    a_o, b_o = origin[:, ::2], origin[:, 1::2]
    b_o = b_o.scatter_reduce(1, dst, a_o.gather(1, src), reduce="amin")
    new_origin = torch.cat([a_o.gather(1, unm), b_o], dim=1)
    return new_w.div_(new_size.to(acc)).to(x.dtype), new_size, new_origin  # in place: new_w is this step's own


@COMPRESSORS.register("tome")
class ToMeCompressor(nn.Module):
    """Merge each clip of ``clip_len`` frames to ``clip_len·tokens_per_frame`` tokens (HiCo level 1).

    ``forward(tokens [B, T, M, D]) -> [B, T·tokens_per_frame, D]``; ``T`` must be a multiple of
    ``clip_len``. Non-learnable: no parameters. ``in_dim`` is filled in by the builder; ``head_dim``
    is the group size of the similarity metric (64 as in VideoChat-Flash's ``tome16_mlp_hd64``).
    See the module docstring for the output order.

    Args:
        clip_len: frames merged together (HiCo's clip); the video's frame count must be a multiple of it.
        tokens_per_frame: tokens each frame keeps: a clip of ``clip_len`` frames leaves exactly
            ``clip_len·tokens_per_frame`` tokens (at most the encoder's tokens per frame).
        head_dim: group size of the similarity metric: each token's features are averaged over groups of
            ``head_dim`` channels before cosine similarity (64 as in VideoChat-Flash's ``tome16_mlp_hd64``).
        restore_order: emit each clip's tokens in their spatio-temporal order (by the smallest original index
            merged into each); false keeps the reference's order (unmerged A tokens, then B), for released weights
            trained with it.
    """

    def __init__(
        self,
        in_dim: PositiveInt,
        clip_len: PositiveInt = 4,
        tokens_per_frame: PositiveInt = 16,
        head_dim: PositiveInt = 64,
        restore_order: bool = True,
    ):
        """Argument types and ranges are the annotations' (checked by lrc.constraints before building)."""
        super().__init__()
        if in_dim % head_dim:
            # The metric reshapes each token to [in_dim // head_dim, head_dim] and averages the groups.
            divisors = [g for g in range(1, min(head_dim, in_dim) + 1) if in_dim % g == 0]
            why = (
                f"head_dim ({head_dim}) is larger than in_dim ({in_dim})" if head_dim > in_dim
                else f"in_dim ({in_dim}) is not divisible by head_dim ({head_dim})"
            )
            hint = f"e.g. {divisors[-1]}"
            if head_dim > in_dim:
                hint += " (head_dim = in_dim gives a plain cosine over all features)"
            raise ValueError(
                f"tome: {why}. The similarity metric splits each token's features into groups of "
                f"head_dim and averages the groups, so head_dim must divide in_dim. Set "
                f"compressor.head_dim to a divisor of {in_dim}, {hint}."
            )
        self.in_dim = in_dim
        self.clip_len = clip_len
        self.tokens_per_frame = tokens_per_frame
        self.head_dim = head_dim
        self.restore_order = bool(restore_order)
        self.out_dim = in_dim

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, clip_len={self.clip_len}, tokens_per_frame={self.tokens_per_frame}, "
                f"head_dim={self.head_dim}, restore_order={self.restore_order}")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, m, d = check_clip_tokens("tome", tokens, self.in_dim, self.clip_len)
        per_clip = self.clip_len * m
        target = self.clip_len * self.tokens_per_frame
        if per_clip < target:
            raise ValueError(
                f"tome: a clip has {self.clip_len}×{m} = {per_clip} tokens, fewer than the "
                f"{self.clip_len}×{self.tokens_per_frame} = {target} requested; merging cannot add tokens. "
                f"Set tokens_per_frame <= {m}."
            )

        # Fold clips into the batch: every clip is merged independently, in (t, h, w) order.
        x = tokens.reshape(b * (t // self.clip_len), per_clip, d)
        if per_clip == target:
            return x.reshape(b, t * self.tokens_per_frame, d)
        size = torch.ones(x.shape[0], per_clip, 1, device=x.device, dtype=torch.float32)
        origin = torch.arange(per_clip, device=x.device).expand(x.shape[0], per_clip)
        for r in merge_schedule(per_clip, target):
            x, size, origin = _bipartite_merge_step(x, size, origin, r, self.head_dim)
        if self.restore_order:
            # Origins are distinct (each input token survives in exactly one group), so sorting them
            # restores the clip's spatio-temporal order.
            order = origin.argsort(dim=1)
            x = x.gather(1, order[..., None].expand(-1, -1, d))
        return x.reshape(b, t * self.tokens_per_frame, d)
