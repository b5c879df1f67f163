"""Ulysses sequence parallelism for the LLM: one long sequence spread over P ranks (docs/distributed.md).

Long videos make long LLM inputs (paper §3.5 trains on up to 10,000+ frames' worth of tokens); the
activations of one sequence can outgrow one device. DeepSpeed-Ulysses (Jacobs et al., 2023) splits the
sequence instead of the batch:

* each of the P ranks of a *sequence-parallel group* holds one contiguous chunk of ``S / P`` tokens and
  runs every token-wise part of the decoder (embeddings, MLPs, norms, projections, the LM head) on it;
* in each attention layer, an all-to-all turns this rank's ``[S/P tokens, all H heads]`` of q, k and v
  into ``[all S tokens, H/P heads]``; attention runs on the full sequence for those heads (plain causal
  attention: the sequence is whole again), and a second all-to-all turns the output back.

Nothing here is tied to a model family: the attention function is registered with transformers'
``AttentionInterface`` as ``ulysses_<inner>`` (``ulysses_sdpa``, ``ulysses_flash_attention_2`` ...) and
wraps the inner implementation. It only shards when the forward carries a ``sequence_parallel`` argument
(:func:`sequence_parallel_forward` passes it); any other call (validation, generation, DPO scoring) is
the inner attention unchanged, on the whole sequence.

Why our own: DeepSpeed is not a dependency (and accelerate's ``sp_size`` is DeepSpeed's ALST underneath);
``torch.distributed.tensor.experimental.context_parallel`` (ring attention) only shards the CUDA SDPA
kernels (torch 2.14 on CPU: "aten._scaled_dot_product_flash_attention_for_cpu ... does not have a
sharding strategy registered"). The collectives are torch's autograd-aware ones
(``torch.distributed.nn.functional``), which run on gloo (CPU) and NCCL alike.

Gradients: every rank's loss is the *global* loss (an autograd all-reduce of the per-chunk sums), so
each rank's gradients are P times its share and the *mean* over the group is the true gradient — which
is what DDP and FSDP compute anyway when the SP group is part of their data-parallel world.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from lrc.config.schema import SEQUENCE_PARALLEL_ATTENTION
from lrc.errors import LrcError

PREFIX = "ulysses_"
# Inner attentions the wrapper can call with no mask and is_causal (eager masks only through the mask);
# lrc validate refuses the others (lrc/config/schema.py)
INNER = SEQUENCE_PARALLEL_ATTENTION


class SequenceParallelError(LrcError, ValueError):
    """A sequence-parallel setting or input that cannot work; the message says what to change."""


@dataclass(frozen=True)
class SequenceParallelGroup:
    """The ranks that share one sequence: ``size`` of them, this one being ``rank`` within the group."""

    group: Any  # a torch.distributed ProcessGroup
    size: int
    rank: int


_GROUPS: dict[int, SequenceParallelGroup] = {}


def sequence_parallel_group(size: int) -> SequenceParallelGroup:
    """This rank's group of ``size`` consecutive ranks (0..P-1, P..2P-1, ...), created on first use.

    Consecutive ranks keep a group within one node, where the all-to-alls are cheapest; the ranks with
    equal ``rank // size`` form one data-parallel replica (:func:`lrc.data.sharding.data_parallel_rank`). Every rank must
    call this at the same point (``dist.new_group`` is collective), which the first training forward is.
    """
    if size in _GROUPS:
        return _GROUPS[size]
    if not (dist.is_available() and dist.is_initialized()):
        raise SequenceParallelError(f"model.llm.sequence_parallel={size} needs {size} (or a multiple of {size}) "
                                    "processes with torch.distributed set up (distributed.devices × num_nodes); this "
                                    "process runs alone. Set model.llm.sequence_parallel=1 to run without it")
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % size:
        raise SequenceParallelError(f"model.llm.sequence_parallel={size} must divide the number of processes "
                                    f"({world}, distributed.devices × num_nodes)")
    mine = None
    for first in range(0, world, size):  # every rank creates every group, in the same order
        group = dist.new_group(list(range(first, first + size)))
        if first <= rank < first + size:
            mine = SequenceParallelGroup(group, size, rank - first)
    _GROUPS[size] = mine
    return mine


def check_model(config: Any, size: int) -> None:
    """What Ulysses needs of the LLM (a transformers config): heads that split evenly, no sliding window.

    Each rank gets H/P query heads and the matching H_kv/P key/value heads (GQA keeps its grouping
    because both splits are contiguous), so both counts must be multiples of P. Sliding-window layers
    get their window from a mask, and the sharded forward runs without one."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    for what, count in (("num_attention_heads", heads), ("num_key_value_heads", kv_heads)):
        if count % size:
            raise SequenceParallelError(
                f"model.llm.sequence_parallel={size}: the LLM's {what} ({count}) is not a multiple of {size}; "
                "Ulysses splits attention heads across the ranks of a group. Use a sequence_parallel size "
                f"that divides both {heads} query and {kv_heads} key/value heads")
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in (getattr(config, "layer_types", None) or []):
        raise SequenceParallelError(f"model.llm.sequence_parallel={size}: the LLM uses sliding-window attention, "
                                    "which the sharded forward does not apply; turn it off (config.use_sliding_window="
                                    "false) or set sequence_parallel=1")


def register_attention(inner: str) -> str:
    """Register ``ulysses_<inner>`` with transformers (attention and its mask function); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if inner not in INNER:
        raise SequenceParallelError(f"model.llm.sequence_parallel needs attn_implementation in {', '.join(INNER)}, "
                                    f"got {inner!r} (the eager kernel cannot run causal without a full mask)")
    name = PREFIX + inner
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, functools.partial(ulysses_attention, inner=inner))
        # unsharded calls build the inner kernel's usual mask; sharded calls pass no 2-D mask, so none is built
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])
    return name


# ---------------------------------------------------------------------------------------------
# The two all-to-alls, on [B, heads, tokens, head_dim] (the layout transformers hands attention)
# ---------------------------------------------------------------------------------------------
def _all_to_all(x: torch.Tensor, sp: SequenceParallelGroup) -> torch.Tensor:
    """Chunk i of dim 0 goes to rank i; what rank j sent lands at index j (autograd: the reverse a2a)."""
    x = x.contiguous()
    return dist_fn.all_to_all_single(torch.empty_like(x), x, group=sp.group)


def tokens_to_heads(x: torch.Tensor, sp: SequenceParallelGroup) -> torch.Tensor:
    """``[B, H, S/P, d]`` (all heads, my tokens) → ``[B, H/P, S, d]`` (my heads, all tokens)."""
    b, h, s, d = x.shape
    x = x.reshape(b, sp.size, h // sp.size, s, d).transpose(0, 1)  # [P(head chunk), B, H/P, s, d]
    x = _all_to_all(x, sp)  # [P(token chunk), B, H/P, s, d]
    return x.permute(1, 2, 0, 3, 4).reshape(b, h // sp.size, sp.size * s, d)


def heads_to_tokens(x: torch.Tensor, sp: SequenceParallelGroup) -> torch.Tensor:
    """``[B, H/P, S, d]`` → ``[B, H, S/P, d]``: the inverse of :func:`tokens_to_heads`."""
    b, hp, s_full, d = x.shape
    s = s_full // sp.size
    x = x.reshape(b, hp, sp.size, s, d).permute(2, 0, 1, 3, 4)  # [P(token chunk), B, H/P, s, d]
    x = _all_to_all(x, sp)  # [P(head chunk), B, H/P, s, d]
    return x.transpose(0, 1).reshape(b, hp * sp.size, s, d)


def ulysses_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, *, inner: str,
                      sequence_parallel: SequenceParallelGroup | None = None, **kwargs: Any):
    """transformers attention function: all-to-all, ``inner`` attention on the full sequence, all-to-all.

    Returns ``(output [B, S/P, H, d], None)`` like every transformers attention function."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attend = ALL_ATTENTION_FUNCTIONS[inner]
    if sequence_parallel is None:  # an unsharded call: the inner attention as is
        return attend(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None:
        raise SequenceParallelError("sequence-parallel attention got a mask; it runs plain causal attention on the "
                                    "full sequence (see lrc.parallel.sequence_parallel.sequence_parallel_forward)")
    sp = sequence_parallel
    q, k, v = (tokens_to_heads(t, sp) for t in (query, key, value))
    # position_ids (this rank's chunk) would tell flash-attention the sequence is packed; the full
    # sequence is one causal sequence, which is what no mask and no position ids mean to every kernel
    kwargs = {k_: v_ for k_, v_ in kwargs.items() if k_ not in ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
                                                                 "max_length_q", "max_length_k")}
    out, _ = attend(module, q, k, v, None, is_causal=True, **kwargs)  # [B, S, H/P, d]
    out = heads_to_tokens(out.transpose(1, 2), sp)  # [B, H, S/P, d]
    return out.transpose(1, 2).contiguous(), None


# ---------------------------------------------------------------------------------------------
# One forward of a transformers causal LM over a sequence split across the group
# ---------------------------------------------------------------------------------------------
@dataclass
class ShardedLMOutput:
    """What :func:`sequence_parallel_forward` returns on each rank of the group."""

    logits: torch.Tensor  # [B, stop - start, V]: this rank's chunk (positions ≥ length are padding)
    loss: torch.Tensor | None  # next-token CE mean over labelled tokens of the whole sequence, every rank alike
    hidden: torch.Tensor | None  # [B, length, D] last-layer hidden states of the whole sequence (when asked)
    start: int  # this rank's chunk is positions [start, stop) of the padded sequence
    stop: int
    length: int  # the sequence length before padding to a multiple of P


def check_right_padded(attention_mask: torch.Tensor | None) -> None:
    """The sharded forward runs plain causal attention, which equals the padded model's result at every
    real token only when padding is at the end of each row (lrc's collator pads right)."""
    if attention_mask is None:
        return
    mask = attention_mask.bool()
    # right-padded: once a row has a 0, the rest of it is 0
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise SequenceParallelError("sequence parallelism needs right-padded rows (1…1 0…0 in attention_mask); this "
                                    "batch has padding before real tokens (left padding or packed holes)")


def sequence_parallel_forward(model: nn.Module, inputs_embeds: torch.Tensor, sp: SequenceParallelGroup,
                              labels: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                              output_hidden_states: bool = False) -> ShardedLMOutput:
    """Run a transformers causal LM (``model``, registered ``ulysses_*`` attention) on this rank's chunk.

    Every rank of the group passes the same full ``inputs_embeds [B, S, D]`` (and ``labels [B, S]``,
    unshifted, -100 where unscored — lrc's convention, see ``lrc.model.mllm.answer_loss``). The sequence is
    padded at the end to a multiple of P, rank r keeps tokens ``[r·S/P, (r+1)·S/P)`` with their global
    position ids (RoPE sees the same positions as unsharded), and labels are shifted *before* the split,
    so the target of a chunk's last token is the next chunk's first. ``loss`` sums each chunk's CE and
    divides by the number of labelled tokens in the whole sequence: the same value on every rank, with
    P× gradients per rank (module docstring). ``hidden`` is all-gathered (autograd-aware) for TPO heads.
    """
    check_right_padded(attention_mask)
    b, length, _ = inputs_embeds.shape
    padded = -(-length // sp.size) * sp.size
    chunk = padded // sp.size
    start, stop = sp.rank * chunk, (sp.rank + 1) * chunk
    embeds = nn.functional.pad(inputs_embeds, (0, 0, 0, padded - length))[:, start:stop]
    positions = torch.arange(start, stop, device=embeds.device).unsqueeze(0).expand(b, -1)
    # no 2-D mask: causal attention over the reassembled sequence; right padding comes after every real
    # token, so real tokens never attend to it
    out = model(inputs_embeds=embeds, position_ids=positions, attention_mask=None, use_cache=False,
                output_hidden_states=output_hidden_states, sequence_parallel=sp)
    logits = out.logits
    loss = None
    if labels is not None:
        # target of position t is labels[t + 1]; the last position (and the padding) has none
        targets = nn.functional.pad(labels[:, 1:], (0, padded - length + 1), value=-100)[:, start:stop]
        scored = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        local = nn.functional.cross_entropy(scored.reshape(-1, scored.shape[-1]), targets.reshape(-1),
                                            ignore_index=-100, reduction="sum")
        count = (targets != -100).sum()
        dist.all_reduce(count, group=sp.group)
        loss = dist_fn.all_reduce(local, group=sp.group) / count
    hidden = None
    if output_hidden_states:
        parts = dist_fn.all_gather(out.hidden_states[-1].contiguous(), group=sp.group)
        hidden = torch.cat(parts, dim=1)[:, :length]
    return ShardedLMOutput(logits, loss, hidden, start, stop, length)
