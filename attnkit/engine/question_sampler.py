"""Training batches that mix images: at most ``max_per_group`` questions of one image in a batch.

Grouping all questions of an image into one batch (``group_by='image'``: ~13 images per 128 demo questions)
makes the backbone cheap but gives each step, and each BatchNorm batch, few images; independent sampling (one
image per question) gives many images but runs the backbone once per question. This sampler sits in between:
each image's questions are split into chunks of at most ``max_per_group`` and the chunks are dealt into
batches so that no batch holds two chunks of the same image (docs/bench/vqa.md, "From scratch").
"""
from __future__ import annotations

import math
from typing import Hashable, Sequence

import torch

from .data import ShardedBatchSampler

__all__ = ['GroupCapBatchSampler', 'build_batch_sampler']


class GroupCapBatchSampler(ShardedBatchSampler):
    """:class:`~attnkit.engine.data.ShardedBatchSampler` whose global batches hold at most ``max_per_group``
    samples of any group (e.g. questions of one image), the rest of each group going to later batches.

    Each epoch (seeded by ``(seed, epoch)`` like the parent): the samples of every group are shuffled and cut
    into chunks of ``max_per_group``; each group's chunks are spread evenly over the epoch at a random phase;
    batches are filled in that order, a chunk whose
    group is already in the batch waiting for the next batch. Every sample appears exactly once per epoch.
    With ``max_per_group`` >= the largest group this is the parent's ``groups`` order in chunks, and with 1 a
    batch holds ``batch_size`` distinct groups (while enough groups are left).

    Args:
        length, batch_size, world_size, rank, seed, shuffle, drop_last: as :class:`ShardedBatchSampler`.
        groups: group key per sample (required).
        max_per_group: most samples of one group in one global batch (>= 1).
    """

    def __init__(self, length: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, groups: Sequence[Hashable] | None = None,
                 max_per_group: int = 2) -> None:
        if groups is None:
            raise ValueError('GroupCapBatchSampler needs groups (a key per sample, e.g. the image id).')
        if int(max_per_group) < 1:
            raise ValueError(f'GroupCapBatchSampler max_per_group must be >= 1, got {max_per_group!r}.')
        super().__init__(length, batch_size, world_size, rank, seed, shuffle, drop_last, groups)
        self.max_per_group = int(max_per_group)

    def _chunks(self, g: torch.Generator) -> list[tuple[int, list[int]]]:
        """(group number, sample indices) chunks in dealing order."""
        assert self.members is not None
        k = self.max_per_group
        chunks = []
        for gi, members in enumerate(self.members):
            if self.shuffle:
                members = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
            chunks += [(gi, members[i:i + k]) for i in range(0, len(members), k)]
        if self.shuffle:
            # spread each group's chunks evenly over the epoch (chunk j of n at (j + u) / n, u random per group)
            # so that few chunks ever wait and the last batches are not left with a few large groups
            u = torch.rand(len(self.members), generator=g).tolist()
            sizes = [math.ceil(len(m) / k) for m in self.members]
            counter: dict[int, int] = {}
            keys = []
            for gi, _ in chunks:
                j = counter[gi] = counter.get(gi, -1) + 1
                keys.append((j + u[gi]) / sizes[gi])
            order = sorted(range(len(chunks)), key=keys.__getitem__)
            chunks = [chunks[i] for i in order]
        return chunks

    def _global_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        gb = self.batch_size * self.world_size
        pending = self._chunks(g)
        batches: list[list[int]] = []
        while pending:
            batch: list[int] = []
            seen: set[int] = set()
            rest = []
            for pos, (gi, idx) in enumerate(pending):
                if len(batch) == gb:
                    rest.extend(pending[pos:])
                    break
                if gi in seen:
                    rest.append((gi, idx))
                    continue
                take = idx[:gb - len(batch)]
                batch += take
                seen.add(gi)
                if len(take) < len(idx):
                    rest.append((gi, idx[len(take):]))
            batches.append(batch)
            pending = rest
        if batches and len(batches[-1]) < gb:
            if self.drop_last:
                batches.pop()
            elif self.world_size > 1:
                last = batches[-1]
                flat = [i for b in batches for i in b]
                need = -len(last) % self.world_size
                batches[-1] = last + flat[:need]
        return batches

    def __len__(self) -> int:
        # the dealing can leave the tail of the epoch in more, smaller batches than length / batch size (when
        # few groups are left): count them exactly for this epoch
        n = len(self._global_batches())
        return n if n else math.ceil(self.length / (self.batch_size * self.world_size))


def build_batch_sampler(length: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                        shuffle: bool = True, drop_last: bool = False, groups: Sequence[Hashable] | None = None,
                        max_per_group: int | None = None) -> ShardedBatchSampler:
    """The training batch sampler of ``data.train``: :class:`GroupCapBatchSampler` when ``max_per_group`` is
    given (``data.train.max_per_group``, with ``group_by``), else the plain :class:`ShardedBatchSampler`."""
    if max_per_group is None:
        return ShardedBatchSampler(length, batch_size, world_size, rank, seed, shuffle, drop_last, groups)
    if groups is None:
        from ..errors import ConfigError
        raise ConfigError(f'data.train.max_per_group={max_per_group!r} caps the samples of one group per batch and '
                          "needs data.train.group_by (e.g. group_by='image').")
    if isinstance(max_per_group, bool) or not isinstance(max_per_group, int) or max_per_group < 1:
        from ..errors import ConfigError
        raise ConfigError(f'data.train.max_per_group must be an integer >= 1, got {max_per_group!r}.')
    return GroupCapBatchSampler(length, batch_size, world_size, rank, seed, shuffle, drop_last, groups,
                                max_per_group)
