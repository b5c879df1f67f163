"""Which samples this process sees when several processes train or evaluate together.

Training shards by data-parallel replica (:func:`data_parallel_rank`): under sequence parallelism the
ranks of one group share a batch. Evaluation shards by rank (:class:`EvalShardSampler`), and the
training module gathers every rank's results (lrc/train/module.py).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch.distributed as dist
from torch.utils.data import DistributedSampler

from lrc.errors import LrcError


class ShardingError(LrcError, RuntimeError):
    """A split too small for the ranks that share it."""


def data_parallel_rank(size: int) -> tuple[int, int]:
    """(replica index, number of replicas) of this process when groups of ``size`` ranks share a sequence.

    Samplers shard data by this, not by the global rank: the ranks of one group must see the same batch."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank() // size, max(1, dist.get_world_size() // size)


class EvalShardSampler(DistributedSampler):
    """This rank's share of an evaluation split, in order: rank r takes samples r, r + W, r + 2W, ...

    ``even=False`` (DDP): no sample is repeated, so the gathered metrics (lrc/train/module.py) cover the split
    exactly once; ranks may run one batch fewer, which DDP allows in evaluation (no collective per
    batch once the first has synced buffers). ``even=True`` (FSDP, DeepSpeed: every forward gathers
    parameters, so every rank must run as many batches): shards are padded with the first samples, as
    torch's DistributedSampler does, and those are counted twice."""

    def __init__(self, size: int, even: bool, num_replicas: int, rank: int):
        # DistributedSampler.__init__ is not called: it wants a dataset and a process group
        if size < num_replicas:
            raise ShardingError(f"the validation split has {size} samples, fewer than the {num_replicas} "
                                        "ranks: every rank needs at least one; use fewer devices or more data")
        self.size, self.even, self.num_replicas, self.rank = size, even, num_replicas, rank
        self.shuffle, self.drop_last, self.epoch, self.seed = False, False, 0, 0
        self.total_size = -(-size // num_replicas) * num_replicas if even else size
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return (i % self.size for i in range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def eval_sampler(size: int, trainer: Any) -> EvalShardSampler | None:
    """The evaluation sampler for ``trainer``'s strategy, or None on one process (a plain loader)."""
    if trainer is None or trainer.world_size == 1:
        return None
    from lightning.pytorch.strategies import DDPStrategy

    uneven_ok = type(trainer.strategy) is DDPStrategy  # exactly DDP: DeepSpeed subclasses it
    return EvalShardSampler(size, even=not uneven_ok, num_replicas=trainer.world_size, rank=trainer.global_rank)
