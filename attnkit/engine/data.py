"""Data loaders of the engine: epoch-seeded sharded training batches and disjoint evaluation shares."""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

__all__ = ['ShardedBatchSampler', 'build_train_loader', 'build_eval_loader', 'seed_worker', 'collate_fn_of']


class ShardedBatchSampler(Sampler[list[int]]):
    """Training batches for one process: a permutation seeded by ``(seed, epoch)`` cut into global batches of
    ``batch_size * world_size``; process ``rank`` takes its slice of each.

    So ``world_size`` processes with ``batch_size`` b see exactly the samples one process with
    ``b * world_size`` sees in each step. A last incomplete global batch is kept (padded by wrapping round
    to a multiple of ``world_size`` when ``world_size > 1``, so every process runs the same number of
    steps) unless ``drop_last``.

    Args:
        length: dataset size.
        batch_size: samples per process per batch.
        world_size, rank: the process group.
        seed: base seed of the order; ``set_epoch(e)`` selects the epoch.
        shuffle: random order (else 0..length-1).
        drop_last: drop the last incomplete global batch.
    """

    def __init__(self, length: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        if length <= 0:
            raise ValueError('The training dataset is empty.')
        self.length, self.batch_size, self.world_size, self.rank = length, batch_size, world_size, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        gb = self.batch_size * self.world_size
        batches = [order[i:i + gb] for i in range(0, self.length, gb)]
        if batches and len(batches[-1]) < gb:
            if self.drop_last:
                batches.pop()
            elif self.world_size > 1:
                last = batches[-1]
                need = -len(last) % self.world_size
                batches[-1] = last + [order[i % self.length] for i in range(need)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            per = len(batch) // self.world_size
            yield batch[self.rank * per:(self.rank + 1) * per]

    def __len__(self) -> int:
        gb = self.batch_size * self.world_size
        return self.length // gb if self.drop_last else -(-self.length // gb)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed (set by the loader generator)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def collate_fn_of(dataset: Any):
    """The dataset's own ``collate`` or :func:`attnkit.data.collate`."""
    from ..data import collate
    return getattr(dataset, 'collate', collate)


def build_train_loader(dataset: Any, sampler: ShardedBatchSampler, num_workers: int, seed: int, epoch: int,
                       pin_memory: bool = False) -> DataLoader:
    """A loader over ``sampler``'s batches; worker seeds come from a generator seeded by ``(seed, epoch)``."""
    sampler.set_epoch(epoch)
    g = torch.Generator().manual_seed(seed * 100003 + epoch + 1)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn_of(dataset), num_workers=num_workers,
                      pin_memory=pin_memory, generator=g, worker_init_fn=seed_worker,
                      persistent_workers=False)


def build_eval_loader(dataset: Any, batch_size: int, num_workers: int, world_size: int = 1, rank: int = 0,
                      pin_memory: bool = False) -> DataLoader:
    """Process ``rank`` gets samples ``rank, rank + world_size, ...``: disjoint shares, no padding."""
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, collate_fn=collate_fn_of(dataset),
                      num_workers=num_workers, pin_memory=pin_memory, shuffle=False)
