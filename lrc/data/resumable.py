"""The training loader's order, made resumable: an interrupted run continues with the remaining batches of
its epoch, in the same shuffled order, instead of restarting the epoch (docs/quickstart.md: checkpoints resume
exactly, data position included).

The order of epoch ``e`` is a pure function of ``(seed, e)``. The loader counts the batches it has handed
to the training loop; Lightning stores that count with the fit loop's state in every checkpoint, because
the loader has ``state_dict``/``load_state_dict`` (Lightning's "stateful dataloader" interface), and
hands it back before the first batch of a resumed run. The sampler then skips the batches already done.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochShuffleSampler(DistributedSampler):
    """A permutation seeded by ``(seed, epoch)``, this process's share of it under DDP; ``skip`` indices
    (of that share) are left out of the next pass only.

    Lightning calls ``set_epoch`` at the start of every epoch. Being a DistributedSampler, it is not
    wrapped in Lightning's own one under DDP (which would shard without knowing about ``skip``).
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int | None = None, rank: int | None = None):
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group
        if num_replicas is None or rank is None:
            on = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if on else 1
            rank = torch.distributed.get_rank() if on else 0
        self.size, self.seed, self.num_replicas, self.rank = size, seed, num_replicas, rank
        self.shuffle, self.drop_last = True, False
        self.num_samples = math.ceil(size / num_replicas)  # per process; short shares repeat the start
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.skip = epoch, 0

    def order(self, epoch: int) -> list[int]:
        """This process's indices for ``epoch``, a pure function of (seed, epoch, rank, world size)."""
        full = np.random.default_rng([self.seed, epoch]).permutation(self.size).tolist()
        full += full[: self.total_size - self.size]
        return full[self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.order(self.epoch)[skip:])

    def __len__(self) -> int:
        # the full epoch, also when resuming: Lightning counts the batches already done as part of it
        return self.num_samples


class ResumableLoader(DataLoader):
    """The train DataLoader over an :class:`EpochShuffleSampler`; its state is (epoch, batches done).

    ``order``: another such sampler to use (lrc/data/packing.py's, which yields whole packs)."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, order: EpochShuffleSampler | None = None,
                 **kwargs: Any):
        self.order = order if order is not None else EpochShuffleSampler(len(dataset), seed)  # type: ignore[arg-type]
        super().__init__(dataset, batch_size=batch_size, sampler=self.order, **kwargs)
        self.done_batches = 0

    def __iter__(self) -> Iterator[Any]:
        # Lightning's fetcher does not prefetch from a loader with a length, so a batch counted here is
        # a batch the training loop has taken.
        self.done_batches = self.order.skip // self.batch_size  # type: ignore[operator]
        for batch in super().__iter__():
            self.done_batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.order.epoch, "batches": self.done_batches, "size": self.order.size,
                "seed": self.order.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "packs" in state and type(self) is ResumableLoader:
            raise ValueError(f"the checkpoint was written by a run with data.packing (its position counts "
                             f"{state['packs']} packs); this run has packing off. Resume with the same data.packing, "
                             "or start a fresh run.")
        if state["size"] != self.order.size or state["seed"] != self.order.seed:
            raise ValueError(f"the checkpoint's training data had {state['size']} samples shuffled with seed "
                             f"{state['seed']}; now there are {self.order.size} with seed {self.order.seed}. "
                             "A run resumes exactly only on the data it started with: restore the corpus "
                             "(data.root), or start a fresh run.")
        self.order.epoch = state["epoch"]
        self.order.skip = state["batches"] * self.batch_size  # type: ignore[operator]
