"""Attention within each sample of a packed row, without an N × N mask (paper §3.5, dynamic packing).

A packed row ``[1, N]`` holds several whole samples, told apart by position ids that restart at 0
(lrc/data/packing.py). Given no 2-D mask and such position ids, transformers builds, for its SDPA and
eager kernels, a dense block-diagonal causal mask of the whole row and attends over all N × N entries —
for the skewed lengths of video data about ten times the entries of attending within each sample, so a
packed step is slower than the padded batches it replaces. flash-attention's varlen kernel (on GPU)
attends within each sample only; this module does the same with PyTorch's SDPA on any device: one
causal SDPA call per sample, on views of the row's queries, keys and values, no mask at all.

It is a transformers attention function (``ALL_ATTENTION_FUNCTIONS``), registered under
:data:`VARLEN_SDPA` on first use, and meant to be switched on for the packed forward only
(:func:`varlen_attention`): a padded batch keeps its own implementation and masks. Because that name has
no mask function of its own, transformers builds no mask for the packed forward at all.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import torch
import torch.nn.functional as F

VARLEN_SDPA = "lrc_varlen_sdpa"
# the implementations whose packed forward builds the dense block-diagonal mask (flash-attention does not)
DENSE_MASK_IMPLEMENTATIONS = ("sdpa", "eager")
# the samples of the row being forwarded, found once per forward (not once per layer: reading them off the
# position ids syncs with the device)
_BOUNDS: ContextVar[list[tuple[int, int]] | None] = ContextVar("lrc_varlen_bounds", default=None)


def sample_bounds(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the samples of a packed row: runs of ``position_ids [1, N]`` from each 0."""
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    ends = starts[1:] + [int(position_ids.shape[-1])]
    return list(zip(starts, ends))


def varlen_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        sliding_window: int | None = None, position_ids: torch.Tensor | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Causal attention within each sample of a packed row. ``query [1, H, N, D]``, ``key``/``value``
    ``[1, H_kv, N, D]`` (grouped-query heads are repeated); returns ``[1, N, H, D]`` as transformers' own
    SDPA function does. Samples come from ``position_ids`` (restarts at 0)."""
    if attention_mask is not None or position_ids is None or query.shape[0] != 1:
        raise ValueError(f"{VARLEN_SDPA} attends within the samples of one packed row [1, N] with position ids "
                         "restarting per sample and no attention mask; use it only for packed forwards")
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each key/value head serves a group
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        value = value.repeat_interleave(query.shape[1] // value.shape[1], dim=1)
    dropout = dropout if module.training else 0.0
    parts = []
    for start, end in _BOUNDS.get() or sample_bounds(position_ids):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        if sliding_window is not None and end - start > sliding_window:
            # a sliding-window layer (some Qwen2 configs): causal and at most `sliding_window` back
            i = torch.arange(end - start, device=query.device)
            allowed = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < sliding_window)
            parts.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=scaling))
        else:
            parts.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scaling))
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register :func:`varlen_sdpa_forward` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_forward)
    return VARLEN_SDPA


@contextmanager
def varlen_attention(config: Any, position_ids: torch.Tensor | None = None) -> Iterator[None]:
    """Inside the block, a model with ``config`` attends within samples (for one packed forward, whose
    ``position_ids`` give the samples), when its implementation would otherwise build the dense mask;
    flash-attention is left as it is (varlen already)."""
    old = config._attn_implementation
    if old not in DENSE_MASK_IMPLEMENTATIONS:
        yield
        return
    config._attn_implementation = register()
    bounds = _BOUNDS.set(sample_bounds(position_ids) if position_ids is not None else None)
    try:
        yield
    finally:
        _BOUNDS.reset(bounds)
        config._attn_implementation = old
