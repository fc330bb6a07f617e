"""Multi-task training batches: each batch holds samples of ONE task, tasks mixed by a deterministic schedule.

The training set is an :class:`attnkit.tasks.multitask.MultiTaskDataset`: the samples of task ``t`` occupy the
global indices ``offsets[t] .. offsets[t] + sizes[t] - 1``. For every epoch :class:`TaskBatchSampler` draws

1. the task of each of the epoch's global batches, from ``(seed, epoch)``:

   - ``round_robin``: tasks in turn, in the order of the config (``det, seg, vqa, det, ...``);
   - ``proportional``: independent draws with ``p_t ∝ n_t``;
   - ``temperature``: independent draws with ``p_t ∝ n_t ** (1 / T)`` (``T = 1`` is ``proportional``, large ``T``
     tends to uniform; T5 / multilingual BERT use ``T`` of 2-5 to up-sample small tasks);

   where ``n_t`` is the number of global batches of task ``t`` (its samples divided by its global batch size):
   with one batch size for all tasks that is proportional to the dataset sizes; with per-task batch sizes every
   dataset is consumed at the same rate under ``proportional``.
2. the samples of each task: an endless stream of permutations of the task's samples (seeded by
   ``(seed, epoch, task, pass)``; with ``groups`` the groups are permuted and kept together, as in
   :class:`~attnkit.engine.data.ShardedBatchSampler`) cut into global batches of ``batch_size[t] * world_size``.
   A task drawn more often than it has batches starts another pass; every batch is full.

Process ``rank`` takes its slice of each global batch, so ``world_size`` processes with batch size ``b`` see the
samples one process with ``b * world_size`` sees, and every process runs the same task in the same step (the
model's unused branches are the same everywhere). The whole epoch is a function of ``(seed, epoch)``: skipping the
first ``k`` batches (the Trainer's mid-epoch resume) continues exactly where an uninterrupted run would be.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping, Sequence, Hashable

import torch
from torch.utils.data import Sampler

from ..errors import ConfigError
from ..registry import closest_names

__all__ = ['TaskBatchSampler', 'MODES', 'task_probabilities']

MODES = ('round_robin', 'proportional', 'temperature')


def task_probabilities(num_batches: Mapping[str, int], mode: str, temperature: float = 1.0) -> dict[str, float]:
    """The probability of each task per batch (``round_robin``: the share of turns, ``1 / K`` each).

    Args:
        num_batches: task -> its global batches per pass over its data (``n_t``).
        mode: one of :data:`MODES`.
        temperature: ``T`` of the ``temperature`` mode (``p_t ∝ n_t ** (1 / T)``).
    """
    if mode == 'round_robin':
        return {t: 1.0 / len(num_batches) for t in num_batches}
    power = 1.0 if mode == 'proportional' else 1.0 / float(temperature)
    weights = {t: float(n) ** power for t, n in num_batches.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


class TaskBatchSampler(Sampler[list[int]]):
    """One-task batches of global dataset indices, mixed across tasks (see the module docstring).

    Args:
        sizes: task -> number of samples, in the dataset's order (its indices follow one another).
        batch_size: samples per process per batch: one int, or task -> int.
        mode: ``'round_robin'`` | ``'proportional'`` | ``'temperature'``.
        temperature: ``T`` (``temperature`` mode only; ``T > 0``).
        world_size, rank: the process group.
        seed: base seed; ``set_epoch(e)`` selects the epoch.
        shuffle: random sample order within each task (else 0..n-1, pass after pass).
        num_batches: batches per epoch; default the sum of ``n_t`` (one pass over every task's data on average).
        groups: task -> group key per sample (e.g. VQA image ids), or None: groups stay together in batches.
    """

    def __init__(self, sizes: Mapping[str, int], batch_size: int | Mapping[str, int], mode: str = 'round_robin',
                 temperature: float = 1.0, world_size: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True,
                 num_batches: int | None = None, groups: Mapping[str, Sequence[Hashable] | None] | None = None
                 ) -> None:
        if mode not in MODES:
            close = closest_names(str(mode), MODES)
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise ConfigError(f"data.train.sampler.mode {mode!r} is unknown.{hint} Modes: {', '.join(MODES)}.")
        if mode == 'temperature' and not float(temperature) > 0:
            raise ConfigError(f'data.train.sampler: temperature T must be > 0, got {temperature!r}.')
        self.tasks = list(sizes)
        if not self.tasks:
            raise ConfigError('TaskBatchSampler: no tasks.')
        empty = [t for t in self.tasks if int(sizes[t]) <= 0]
        if empty:
            raise ConfigError(f"The training data of task(s) {', '.join(empty)} is empty.")
        self.sizes = {t: int(sizes[t]) for t in self.tasks}
        self.batch_size = self._per_task(batch_size)
        self.offsets, start = {}, 0
        for t in self.tasks:
            self.offsets[t], start = start, start + self.sizes[t]
        self.mode, self.temperature = mode, float(temperature)
        self.world_size, self.rank, self.seed, self.shuffle = int(world_size), int(rank), int(seed), bool(shuffle)
        self.members: dict[str, list[list[int]] | None] = {}
        for t in self.tasks:
            keys = (groups or {}).get(t)
            if keys is None:
                self.members[t] = None
                continue
            if len(keys) != self.sizes[t]:
                raise ConfigError(f'TaskBatchSampler: {len(keys)} group keys for the {self.sizes[t]} samples of '
                                  f'task {t!r}.')
            by_key: dict[Hashable, list[int]] = {}
            for i, key in enumerate(keys):
                by_key.setdefault(key, []).append(i)
            self.members[t] = list(by_key.values())
        self.task_batches = {t: math.ceil(self.sizes[t] / (self.batch_size[t] * self.world_size))
                             for t in self.tasks}
        self.num_batches = int(num_batches) if num_batches else sum(self.task_batches.values())
        if self.num_batches <= 0:
            raise ConfigError(f'data.train.sampler.num_batches must be > 0, got {num_batches!r}.')
        self.probabilities = task_probabilities(self.task_batches, mode, self.temperature)
        self.epoch = 0

    def _per_task(self, batch_size: int | Mapping[str, int]) -> dict[str, int]:
        if isinstance(batch_size, Mapping):
            missing = [t for t in self.tasks if t not in batch_size]
            extra = [t for t in batch_size if t not in self.tasks]
            if missing or extra:
                raise ConfigError(f"data.train.batch_size per task must name the tasks {', '.join(self.tasks)}; "
                                  f"missing {missing or 'none'}, unknown {extra or 'none'}.")
            out = {t: int(batch_size[t]) for t in self.tasks}
        else:
            out = {t: int(batch_size) for t in self.tasks}
        bad = {t: b for t, b in out.items() if b <= 0}
        if bad:
            raise ConfigError(f'data.train.batch_size must be > 0 for every task, got {bad}.')
        return out

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self, *key: int) -> torch.Generator:
        seed = self.seed * 100003 + self.epoch
        for k in key:
            seed = seed * 1000003 + k
        return torch.Generator().manual_seed(seed % (2 ** 63))

    def task_schedule(self) -> list[str]:
        """The task of each global batch of the current epoch (the same on every process)."""
        if self.mode == 'round_robin':
            return [self.tasks[k % len(self.tasks)] for k in range(self.num_batches)]
        p = torch.tensor([self.probabilities[t] for t in self.tasks], dtype=torch.float64)
        drawn = torch.multinomial(p, self.num_batches, replacement=True, generator=self._generator(0))
        return [self.tasks[i] for i in drawn.tolist()]

    def _order(self, k: int, task: str, n_pass: int) -> list[int]:
        """Local sample order of pass ``n_pass`` over task number ``k``."""
        members = self.members[task]
        if not self.shuffle:
            return list(range(self.sizes[task])) if members is None else [i for m in members for i in m]
        g = self._generator(1, k, n_pass)
        if members is None:
            return torch.randperm(self.sizes[task], generator=g).tolist()
        return [i for j in torch.randperm(len(members), generator=g).tolist() for i in members[j]]

    def global_batches(self) -> list[tuple[str, list[int]]]:
        """``(task, global indices of the global batch)`` for every batch of the current epoch."""
        streams = {t: ([], 0, 0) for t in self.tasks}  # task -> (current order, position, pass)
        out = []
        for task in self.task_schedule():
            need = self.batch_size[task] * self.world_size
            order, pos, n_pass = streams[task]
            batch: list[int] = []
            while len(batch) < need:
                if pos >= len(order):
                    order, pos, n_pass = self._order(self.tasks.index(task), task, n_pass), 0, n_pass + 1
                take = order[pos:pos + need - len(batch)]
                batch += take
                pos += len(take)
            streams[task] = (order, pos, n_pass)
            off = self.offsets[task]
            out.append((task, [off + i for i in batch]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for task, batch in self.global_batches():
            per = self.batch_size[task]
            yield batch[self.rank * per:(self.rank + 1) * per]

    def __len__(self) -> int:
        return self.num_batches
