"""``MultiTaskDataset``: one dataset per task branch, samples tagged with their task, one-task batches.

Config::

    dataset=dict(type='MultiTaskDataset', tasks=dict(
        det=dict(type='CocoDetection', ...),
        seg=dict(type='VOCSegmentation', ...),
        vqa=dict(type='VQAv2Dataset', ...)))

Every task's dataset is built with the existing builders. A task may also list several datasets
(``det=[dict(type='CocoDetection', ...), dict(type='VOCDetection', ...)]``): they are concatenated.

Indices: the samples of the tasks follow one another in the config's order (task ``t`` holds global indices
``offsets[t] .. offsets[t] + sizes[t] - 1``); :class:`attnkit.engine.task_sampler.TaskBatchSampler` mixes one-task
batches of these indices. A sample is the task dataset's own sample plus ``'task'`` (the branch name);
:meth:`MultiTaskDataset.collate` runs that task's own ``collate`` and sets ``batch['task']``.

Metainfo: ``{'tasks': {name: the task dataset's metainfo}}``. Given back (validation split, checkpoint), each task
dataset is built with its own entry, so label indices and vocabularies stay those of training.

Conflicting class lists (an error, :class:`~attnkit.errors.ConfigError`): two datasets feeding the same branch
whose label spaces differ — the same names in the same order are required, since a label is an index into them.
The label space is ``metainfo['classes']`` (detection, segmentation) and ``metainfo['answers']`` (VQA). It is
checked between the datasets a branch lists, and between a split and the metainfo it is given (the training
split's, for val/test; a checkpoint's). A val/test split may evaluate a subset of the training branches; a branch
the training split does not have is an error.
"""
from __future__ import annotations

import bisect
from typing import Any, Hashable, Mapping, Sequence

from torch.utils.data import Dataset

from ...builder import build_dataset
from ...data.randomness import sample_random
from ...errors import ConfigError, DataError
from ...registry import DATASETS, closest_names

__all__ = ['MultiTaskDataset', 'TaskView', 'ConcatTaskDataset', 'LABEL_SPACE_KEYS']

LABEL_SPACE_KEYS = ('classes', 'answers')  # metainfo entries that two datasets of one branch must share


def _collate_of(dataset: Any):
    from ...engine.data import collate_fn_of
    return collate_fn_of(dataset)


def check_label_space(task: str, expected: Mapping[str, Any] | None, got: Mapping[str, Any] | None,
                      what: str) -> None:
    """ConfigError when ``got`` has another class list / answer vocabulary than ``expected`` (order counts)."""
    for key in LABEL_SPACE_KEYS:
        a = list((expected or {}).get(key) or [])
        b = list((got or {}).get(key) or [])
        if a and b and a != b:
            only_a = [c for c in a if c not in b][:3]
            only_b = [c for c in b if c not in a][:3]
            detail = (f'only in the first: {only_a or "none"}, only in the second: {only_b or "none"}'
                      if only_a or only_b else 'the same names in another order')
            raise ConfigError(f'Task {task!r}: conflicting {key} between {what} ({len(a)} vs {len(b)} {key}; '
                              f'{detail}); one branch needs one label space.')


class ConcatTaskDataset(Dataset):
    """Several datasets of one task, one after the other (their ``collate``, ``metainfo`` are the first's)."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)
        self.ends: list[int] = []
        total = 0
        for d in self.datasets:
            total += len(d)
            self.ends.append(total)
        self.metainfo = getattr(self.datasets[0], 'metainfo', None)
        self.collate = _collate_of(self.datasets[0])

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset number, index inside it) of ``index``."""
        k = bisect.bisect_right(self.ends, index)
        return k, index - (self.ends[k - 1] if k else 0)

    def __getitem__(self, index: int) -> Any:
        k, i = self.locate(index)
        return self.datasets[k][i]

    def group_keys(self, by: str) -> list[Hashable]:
        keys: list[Hashable] = []
        for k, d in enumerate(self.datasets):
            if not hasattr(d, 'group_keys'):
                raise ConfigError(f'group_by={by!r}: {type(d).__name__} cannot group its samples.')
            keys += [(k, key) for key in d.group_keys(by)]
        return keys


class TaskView(Dataset):
    """One task's dataset as seen by a loader of that task alone: its samples, and its ``collate`` with
    ``batch['task'] = name`` (evaluation of one branch). Other attributes are the task dataset's."""

    def __init__(self, dataset: Any, task: str) -> None:
        self.dataset, self.task = dataset, task
        self._collate = _collate_of(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        inner = getattr(self.dataset, '__getitems__', None)
        if inner is not None:
            return inner(list(indices))
        out = []
        for i in indices:
            with sample_random(int(i)):  # as SeededDataset would draw it for the task dataset alone
                out.append(self.dataset[i])
        return out

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate(samples)
        batch['task'] = self.task
        return batch

    def __getattr__(self, name: str) -> Any:
        if name in ('dataset', 'task', '_collate'):
            raise AttributeError(name)
        return getattr(self.dataset, name)


@DATASETS.register_module()
class MultiTaskDataset(Dataset):
    """The datasets of several task branches behind one index space (see the module docstring).

    Args:
        tasks: branch name -> dataset config (or a list of configs, concatenated).
        metainfo: ``{'tasks': {name: metainfo}}`` from the training split or a checkpoint.

    Attributes:
        datasets: branch name -> its dataset. sizes, offsets: branch name -> sample count / first global index.
    """

    def __init__(self, tasks: Mapping[str, Any], metainfo: Mapping[str, Any] | None = None) -> None:
        if not isinstance(tasks, Mapping) or not tasks:
            raise ConfigError('MultiTaskDataset needs tasks=dict(<branch name>=<dataset config>, ...).')
        given = dict((metainfo or {}).get('tasks') or {}) if metainfo else None
        if metainfo and 'tasks' not in metainfo:
            raise ConfigError(f"MultiTaskDataset metainfo must be {{'tasks': {{name: metainfo}}}} (a multi-task "
                              f"checkpoint's); got keys {sorted(metainfo)}.")
        if given is not None:
            unknown = [t for t in tasks if t not in given]
            if unknown:
                hint = closest_names(unknown[0], given)
                raise ConfigError(f"MultiTaskDataset: task {unknown[0]!r} is not a branch of the training data / "
                                  f"checkpoint (branches: {', '.join(given)})"
                                  + (f"; did you mean {hint[0]!r}?" if hint else '.'))
        self.datasets: dict[str, Any] = {}
        for name, cfg in tasks.items():
            self.datasets[str(name)] = self._build_task(str(name), cfg, None if given is None else given[name])
        self.sizes = {t: len(d) for t, d in self.datasets.items()}
        self.offsets: dict[str, int] = {}
        self._starts: list[int] = []
        start = 0
        for t in self.datasets:
            self.offsets[t] = start
            self._starts.append(start)
            start += self.sizes[t]
        self._names = list(self.datasets)
        self._length = start

    @staticmethod
    def _build_task(name: str, cfg: Any, meta: Mapping[str, Any] | None) -> Any:
        cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
        if not cfgs or not all(isinstance(c, Mapping) for c in cfgs):
            raise ConfigError(f'MultiTaskDataset task {name!r}: give a dataset config dict (or a list of them), '
                              f'got {cfg!r:.200}.')
        built = []
        for k, c in enumerate(cfgs):
            if dict(c).get('type') == 'MultiTaskDataset':
                raise ConfigError(f'MultiTaskDataset task {name!r}: a task dataset cannot be a MultiTaskDataset.')
            ref = meta if meta is not None else (getattr(built[0], 'metainfo', None) if built else None)
            ds = build_dataset(c, metainfo=ref)
            what = (f'its dataset {k} ({c.get("type")}) and the metainfo it was given' if meta is not None else
                    f'its datasets 0 ({cfgs[0].get("type")}) and {k} ({c.get("type")})')
            check_label_space(name, ref, getattr(ds, 'metainfo', None), what)
            built.append(ds)
        return built[0] if len(built) == 1 else ConcatTaskDataset(built)

    # ----------------------------------------------------------------------------------------------- access
    @property
    def metainfo(self) -> dict[str, Any]:
        return {'tasks': {t: getattr(d, 'metainfo', None) for t, d in self.datasets.items()}}

    @property
    def tasks(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return self._length

    def locate(self, index: int) -> tuple[str, int]:
        """(task, index inside the task's dataset) of global ``index``."""
        if not 0 <= index < self._length:
            raise IndexError(f'MultiTaskDataset index {index} out of range 0..{self._length - 1}.')
        k = bisect.bisect_right(self._starts, index) - 1
        while self.sizes[self._names[k]] == 0:  # an empty task shares its start with the next one
            k += 1
        task = self._names[k]
        return task, index - self.offsets[task]

    def _tag(self, sample: Any, task: str) -> Any:
        if isinstance(sample, dict):
            sample['task'] = task
        return sample

    def __getitem__(self, index: int) -> Any:
        task, i = self.locate(int(index))
        with sample_random((task, i)):
            return self._tag(self.datasets[task][i], task)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Samples of ``indices``; a task dataset that reads batches itself (VQA: one image read for all of its
        questions) gets its share at once. Random draws are keyed by ``(task, index in the task)``."""
        located = [self.locate(int(i)) for i in indices]
        out: list[Any] = [None] * len(located)
        for task in dict.fromkeys(t for t, _ in located):
            where = [k for k, (t, _) in enumerate(located) if t == task]
            dataset = self.datasets[task]
            inner = getattr(dataset, '__getitems__', None)
            if inner is not None:
                samples = inner([located[k][1] for k in where])
            else:
                samples = []
                for k in where:
                    with sample_random((task, located[k][1])):
                        samples.append(dataset[located[k][1]])
            for k, s in zip(where, samples):
                out[k] = self._tag(s, task)
        return out

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The task dataset's own batch plus ``task`` (str). All samples must belong to one task."""
        tasks = list(dict.fromkeys(s.get('task') for s in samples))
        if len(tasks) != 1 or tasks[0] not in self.datasets:
            raise DataError(f'A multi-task batch must hold samples of one task, got tasks {tasks}: train with the '
                            "task sampler (data.train.sampler=dict(mode='round_robin'|'proportional'|'temperature')).")
        task = tasks[0]
        batch = _collate_of(self.datasets[task])([{k: v for k, v in s.items() if k != 'task'} for s in samples])
        batch['task'] = task
        return batch

    def group_keys(self, by: str | Mapping[str, str]) -> dict[str, list[Hashable] | None]:
        """Task -> group keys (``data.train.group_by``): one key for every task (``'image'``) or per task
        (``dict(vqa='image')``); tasks not named are not grouped."""
        per = dict(by) if isinstance(by, Mapping) else {t: by for t in self.datasets}
        unknown = [t for t in per if t not in self.datasets]
        if unknown:
            raise ConfigError(f"data.train.group_by names task {unknown[0]!r}; tasks: {', '.join(self.datasets)}.")
        out: dict[str, list[Hashable] | None] = {}
        for t, d in self.datasets.items():
            if not per.get(t):
                out[t] = None
                continue
            if not hasattr(d, 'group_keys'):
                raise ConfigError(f'data.train.group_by={per[t]!r} for task {t!r}: {type(d).__name__} cannot group '
                                  'its samples (it has no group_keys()).')
            out[t] = list(d.group_keys(per[t]))
        return out

    def task_view(self, task: str) -> TaskView:
        """Task ``task``'s dataset alone, batches tagged with the task (evaluation of one branch)."""
        if task not in self.datasets:
            hint = closest_names(task, self.datasets)
            raise ConfigError(f"No task {task!r} in this MultiTaskDataset (tasks: {', '.join(self.datasets)})"
                              + (f"; did you mean {hint[0]!r}?" if hint else '.'))
        return TaskView(self.datasets[task], task)
