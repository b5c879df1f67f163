"""Dynamic packing: variable-length samples packed into one row of at most ``max_tokens`` tokens
(paper §3.5, "dynamic packing"; docs/data.md).

Padding a batch to its longest sample wastes the padded slots, and video samples vary a lot in
length (frames × tokens per frame + text). Packing puts several whole samples one after another in a
single row instead, so a step computes over real tokens only:

    row:          [ sample a ........ | sample b .... | sample c ...... ]
    position_ids: [ 0 1 2 ...     n_a | 0 1 ...   n_b | 0 1 2 ...   n_c ]

Each sample keeps its own positions (restarting at 0) and attends only to itself. The model passes
``position_ids`` and no 2-D attention mask to the LLM; transformers reads the restarts as sample
boundaries: a block-diagonal causal mask for SDPA/eager (``masking_utils.find_packed_sequence_indices``)
and ``flash_attn_varlen_func`` with cumulative lengths for flash-attention 2/3
(``modeling_flash_attention_utils._is_packed_sequence``, which wants a batch of one row: hence one
row per batch here).

A sample's length is its ``input_ids`` length, which already counts its visual tokens *after* HiCo
compression: the prompt holds one ``<IMG_CONTEXT>`` slot per visual token (frames × the compressor's
``tokens_per_frame``, lrc/data/prompt.py). Lengths are measured once before training from each video's
metadata (the sampler plugin picks the frame count from it), without decoding frames.

Which samples share a pack is fixed for the run (a function of ``seed`` and the lengths); the order
of the packs is reshuffled every epoch from ``(seed, epoch)``. Lightning sizes an epoch and the LR
schedule from the loader's length once, so the number of packs must not change between epochs —
re-packing every epoch would change it. Under DDP every rank plans the same packs and takes every
world-size-th one; like ``DistributedSampler``, the last few packs of an epoch are repeated so every
rank has as many steps. Resume is exact: the loader's state is (epoch, packs done), as for
:class:`~lrc.data.resumable.ResumableLoader`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lrc.config.schema import PackingConfig
from lrc.data.collate import collate
from lrc.data.resumable import EpochShuffleSampler, ResumableLoader
from lrc.data.prompt import IGNORE_INDEX


class PackOverflow(RuntimeError):
    """A pack built at load time is longer than the budget its plan was made for."""


def plan_packs(lengths: Sequence[int], max_tokens: int, seed: int = 0,
               lookahead: int = PackingConfig.lookahead,
               ids: Sequence[str] | None = None) -> list[tuple[int, ...]]:
    """Group sample indices into packs of at most ``max_tokens`` tokens; every index in exactly one pack.

    The samples are shuffled by ``seed``, then taken ``lookahead`` at a time; within such a window the
    longest sample goes first into the first pack with room for it (first-fit decreasing), which fills
    packs far better than taking samples in order, while the window keeps packs a mix of the whole
    corpus rather than all-long or all-short. Samples are never split: one longer than ``max_tokens``
    is an error naming it (``ids[i]`` when given).
    """
    if max_tokens < 1 or lookahead < 1:
        raise ValueError(f"max_tokens and lookahead must be at least 1, got {max_tokens} and {lookahead}")
    too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
    if too_long:
        names = [f"{ids[i] if ids is not None else i} ({lengths[i]} tokens)" for i in too_long[:5]]
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        raise ValueError(f"{len(too_long)} sample(s) are longer than data.packing.max_tokens={max_tokens}: "
                         f"{', '.join(names)}{more}. Packing never splits a sample: raise max_tokens to at least "
                         f"{max(lengths[i] for i in too_long)}, or sample fewer frames / tokens per frame.")
    order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    packs: list[tuple[int, ...]] = []
    for start in range(0, len(order), lookahead):
        window = sorted(order[start:start + lookahead], key=lambda i: -lengths[i])  # stable: ties keep shuffle
        free: list[int] = []
        members: list[list[int]] = []
        for i in window:
            for k, room in enumerate(free):
                if lengths[i] <= room:
                    free[k] -= lengths[i]
                    members[k].append(i)
                    break
            else:
                free.append(max_tokens - lengths[i])
                members.append([i])
        packs += [tuple(m) for m in members]
    return packs


class PackSampler(EpochShuffleSampler):
    """Yields packs (tuples of sample indices): this rank's share of epoch ``e``'s shuffled pack order.

    A DistributedSampler (through :class:`EpochShuffleSampler`), so Lightning leaves it in place under
    DDP; its ``skip`` counts packs.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0,
                 lookahead: int = PackingConfig.lookahead, ids: Sequence[str] | None = None,
                 num_replicas: int | None = None, rank: int | None = None):
        super().__init__(len(lengths), seed, num_replicas, rank)
        self.max_tokens = max_tokens
        self.packs = plan_packs(lengths, max_tokens, seed, lookahead, ids)
        self.num_samples = math.ceil(len(self.packs) / self.num_replicas)  # packs per rank
        self.total_size = self.num_samples * self.num_replicas

    def order(self, epoch: int) -> list[tuple[int, ...]]:  # type: ignore[override]
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.packs)).tolist()
        perm = [perm[k % len(perm)] for k in range(self.total_size)]  # short shares repeat the start
        return [self.packs[k] for k in perm[self.rank:self.total_size:self.num_replicas]]


class PackedDataset(Dataset):
    """``dataset[pack]`` → the list of that pack's samples (the loader's sampler yields whole packs, so
    a worker process loads a whole pack and the plan never has to reach the workers)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, pack: tuple[int, ...]) -> list[dict[str, Any]]:  # type: ignore[override]
        return [self.dataset[i] for i in pack]


def collate_packed(items: list[dict[str, Any]], pad_id: int, max_tokens: int) -> dict[str, Any]:
    """One packed row from a pack's samples (skip markers dropped and passed on, as in ``collate``).

    Per-sample entries stay per sample (ids, frames, targets, options ...). Token tensors are one row
    ``[1, N]``: ``input_ids``, ``labels``, and ``position_ids`` restarting at 0 for every sample; no
    ``attention_mask`` (its absence is what tells the LLM the row is packed). Positions that point into
    the sequence (``answer_start``, ``query_positions``) are positions in the row. ``sample_start`` and
    ``sample_length`` give each sample's span of the row.
    """
    batch = collate(items, pad_id)  # per-sample entries; its padded token tensors are replaced below
    if not batch["size"]:
        return batch
    kept = [it for it in items if "skipped" not in it]
    lengths = [len(it["input_ids"]) for it in kept]
    if sum(lengths) > max_tokens:
        raise PackOverflow(
            f"the pack of samples {[it['id'] for it in kept]} holds {sum(lengths)} tokens, more than "
            f"data.packing.max_tokens={max_tokens} it was planned for: their lengths changed since they were "
            "measured before the epoch. The sampler plugin must choose the number of frames from the video's "
            "metadata alone (frame count, fps, duration), the same way every time.")
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    labels = []
    for it in kept:
        # the previous sample's last logit sits right before this sample's first token: never a target
        row = it["labels"].clone()
        row[0] = IGNORE_INDEX
        labels.append(row)
    batch.update(
        input_ids=torch.cat([it["input_ids"] for it in kept]).unsqueeze(0),
        labels=torch.cat(labels).unsqueeze(0),
        position_ids=torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0),
        sample_start=starts,
        sample_length=torch.tensor(lengths),
        answer_start=batch["answer_start"] + starts,
        query_positions=[[p + int(s) for p in q] for q, s in zip(batch["query_positions"], starts)],
    )
    # padded-batch only: the attention mask, and DPO's pairs (packing refuses DPO, lrc/config/)
    for key in ("attention_mask", "preference_rows", "chosen_labels", "rejected_input_ids", "rejected_labels",
                "rejected_attention_mask"):
        batch.pop(key, None)
    return batch


class _PackedCollate:
    """Picklable collate for the packed loader (its batches are one pack: ``[list of samples]``)."""

    def __init__(self, pad_id: int, max_tokens: int):
        self.pad_id, self.max_tokens = pad_id, max_tokens

    def __call__(self, packs: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return collate_packed([it for pack in packs for it in pack], self.pad_id, self.max_tokens)


class PackedLoader(ResumableLoader):
    """The packed train DataLoader: one pack per batch, resumable like :class:`ResumableLoader`.

    ``lengths[i]``: sample i's token count (0 for a sample the dataset will skip: it then rides along in
    some pack and is dropped and counted there, as without packing)."""

    def __init__(self, dataset: Dataset, lengths: Sequence[int], max_tokens: int, seed: int = 0,
                 lookahead: int = PackingConfig.lookahead, pad_id: int = 0, ids: Sequence[str] | None = None,
                 **kwargs: Any):
        order = PackSampler(lengths, max_tokens, seed, lookahead, ids)
        super().__init__(PackedDataset(dataset), batch_size=1, seed=seed, order=order,
                         collate_fn=_PackedCollate(pad_id, max_tokens), **kwargs)

    def state_dict(self) -> dict[str, int]:
        return {**super().state_dict(), "packs": len(self.order.packs), "max_tokens": self.order.max_tokens}

    def load_state_dict(self, state: dict[str, int]) -> None:
        planned = (len(self.order.packs), self.order.max_tokens)
        if (state.get("packs"), state.get("max_tokens")) != planned:
            was = (f"{state['packs']} packs of at most {state['max_tokens']} tokens" if "packs" in state
                   else "padded batches (no packing)")
            raise ValueError(f"the checkpoint's training data position counts {was}; this run plans {planned[0]} "
                             f"packs of at most {planned[1]} tokens. A run resumes exactly only with the packing "
                             "it started with: restore data.packing (and data.max_length, the sampler and "
                             "tokens per frame), or start a fresh run.")
        super().load_state_dict(state)
