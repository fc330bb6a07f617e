"""Data loaders of the engine: epoch-seeded sharded training batches and disjoint evaluation shares."""
from __future__ import annotations

import random
from typing import Any, Hashable, Iterator, Sequence

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
        groups: optional group key per sample (e.g. the image id of each VQA question). Then the *groups*
            are shuffled and each group's samples stay next to each other, so a batch holds whole groups
            (a group may straddle two batches) and the model can run its backbone once per image.
    """

    def __init__(self, length: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, groups: Sequence[Hashable] | None = None) -> None:
        if length <= 0:
            raise ValueError('The training dataset is empty.')
        if groups is not None and len(groups) != length:
            raise ValueError(f'ShardedBatchSampler: {len(groups)} group keys for {length} samples.')
        self.length, self.batch_size, self.world_size, self.rank = length, batch_size, world_size, rank
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.members: list[list[int]] | None = None
        if groups is not None:
            by_key: dict[Hashable, list[int]] = {}
            for i, key in enumerate(groups):
                by_key.setdefault(key, []).append(i)
            self.members = list(by_key.values())
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.members is not None:
            perm = torch.randperm(len(self.members), generator=g).tolist() if self.shuffle else \
                range(len(self.members))
            order = [i for k in perm for i in self.members[k]]
        elif self.shuffle:
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
    """Seed numpy and ``random`` in a DataLoader worker from its torch seed (set by the loader generator).

    The samples' own draws do not come from these: :class:`attnkit.data.SeededDataset` seeds each sample from
    ``(seed, epoch, index)``. This only keeps any other draw in a worker distinct per worker, rank and epoch.
    """
    import signal
    # Ctrl-C reaches the whole process group: the main process saves and stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def collate_fn_of(dataset: Any):
    """The dataset's own ``collate`` or :func:`attnkit.data.collate`."""
    from ..data import collate
    return getattr(dataset, 'collate', collate)


def build_train_loader(dataset: Any, sampler: ShardedBatchSampler, num_workers: int, seed: int, epoch: int,
                       pin_memory: bool = False) -> DataLoader:
    """A loader over ``sampler``'s batches of ``SeededDataset(dataset, seed, epoch)``.

    Every sample's augmentation is drawn from ``(seed, epoch, sample index)`` (see :mod:`attnkit.data.randomness`):
    the same whatever the number of workers or processes, and after a resume. Worker seeds (for draws outside
    the samples) come from ``(seed, epoch, rank)``.
    """
    from ..data.randomness import SeededDataset, sample_seed
    sampler.set_epoch(epoch)
    g = torch.Generator().manual_seed(sample_seed(seed, epoch, ('workers', sampler.rank)))
    return DataLoader(SeededDataset(dataset, seed, epoch), batch_sampler=sampler, collate_fn=collate_fn_of(dataset),
                      num_workers=num_workers, pin_memory=pin_memory, generator=g, worker_init_fn=seed_worker,
                      persistent_workers=False)


def build_eval_loader(dataset: Any, batch_size: int, num_workers: int, world_size: int = 1, rank: int = 0,
                      pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """Process ``rank`` gets samples ``rank, rank + world_size, ...``: disjoint shares, no padding.

    Samples are drawn as ``SeededDataset(dataset, seed, epoch=0)``: a random transform in an evaluation pipeline
    (test-time augmentation) gives the same result whatever the number of processes and workers.
    """
    from ..data.randomness import SeededDataset
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(SeededDataset(dataset, seed, 0), batch_size=batch_size, sampler=indices, collate_fn=collate_fn_of(dataset),
                      num_workers=num_workers, pin_memory=pin_memory, shuffle=False)
