"""What the Trainer does differently for a multi-task run: the task sampler, per-task loss names, resume checks,
and the choice of the "best" checkpoint (which also applies to single-task runs: ``train_cfg.best_metric``)."""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import CheckpointError, ConfigError
from ..registry import closest_names
from .task_sampler import TaskBatchSampler

__all__ = ['is_multitask_dataset', 'is_multitask_config', 'build_task_sampler', 'task_loss_names', 'best_score',
           'check_resume_tasks', 'SAMPLER_KEYS']

SAMPLER_KEYS = ('mode', 'T', 'temperature', 'num_batches')


def is_multitask_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` holds several tasks (a :class:`~attnkit.tasks.multitask.MultiTaskDataset`)."""
    return hasattr(dataset, 'task_view') and isinstance(getattr(dataset, 'sizes', None), Mapping)


def is_multitask_config(cfg: Mapping[str, Any]) -> bool:
    """Whether the config trains on a ``MultiTaskDataset`` (read before anything is built)."""
    train = ((cfg.get('data') or {}).get('train') or {})
    return (train.get('dataset') or {}).get('type') == 'MultiTaskDataset'


def build_task_sampler(dataset: Any, train_cfg: Mapping[str, Any], world_size: int, rank: int,
                       seed: int) -> TaskBatchSampler:
    """The :class:`TaskBatchSampler` of ``data.train``: ``sampler=dict(mode=..., T=..., num_batches=...)``,
    ``batch_size`` (int or per task), ``group_by`` (str or per task), ``shuffle``."""
    spec = dict(train_cfg.get('sampler') or {})
    for key in spec:
        if key not in SAMPLER_KEYS:
            close = closest_names(key, SAMPLER_KEYS)
            hint = f" Did you mean {close[0]!r}?" if close else ''
            raise ConfigError(f"Unknown key data.train.sampler.{key}.{hint} Known: {', '.join(SAMPLER_KEYS)}.")
    if 'T' in spec and 'temperature' in spec:
        raise ConfigError('data.train.sampler: give T or temperature, not both.')
    mode = spec.get('mode', 'round_robin')
    temperature = spec.get('T', spec.get('temperature', 1.0 if mode != 'temperature' else None))
    if mode == 'temperature' and temperature is None:
        raise ConfigError("data.train.sampler mode 'temperature' needs T (e.g. dict(mode='temperature', T=2)).")
    if mode != 'temperature' and ('T' in spec or 'temperature' in spec):
        raise ConfigError(f"data.train.sampler: T is used by mode 'temperature' only, not {mode!r}.")
    by = train_cfg.get('group_by')
    return TaskBatchSampler(dataset.sizes, train_cfg.get('batch_size', 2), mode=mode,
                            temperature=float(temperature), world_size=world_size, rank=rank, seed=seed,
                            shuffle=bool(train_cfg.get('shuffle', True)), num_batches=spec.get('num_batches'),
                            groups=dataset.group_keys(by) if by else None)


def task_loss_names(losses: Mapping[str, Any], task: str | None) -> dict[str, str]:
    """The logged name of each loss term: ``<task>/<term>`` for a multi-task batch (``loss``, the weighted total,
    and names that already hold a ``/`` are kept), the term itself otherwise."""
    if task is None:
        return {k: k for k in losses}
    return {k: k if k == 'loss' or '/' in k else f'{task}/{k}' for k in losses}


def best_score(metrics: Mapping[str, float], spec: Any) -> tuple[str, float]:
    """``(name, value)`` that decides the best checkpoint (larger is better).

    Args:
        metrics: one evaluation's metrics (multi-task: ``<task>/<metric>``).
        spec: ``train_cfg.best_metric``: None = the first metric (the evaluator's primary one, as before);
            a metric name (``'det/AP'``); or weights ``{'det/AP': 1, 'seg/mIoU': 1}`` = their weighted sum
            (a negative weight for a metric where lower is better).
    """
    if spec is None:
        name, value = next(iter(metrics.items()))
        return name, float(value)
    names = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, Mapping) else None
    if not names:
        raise ConfigError(f"train_cfg.best_metric must be a metric name or a dict name -> weight, got {spec!r}.")
    for name in names:
        if name not in metrics:
            close = closest_names(str(name), metrics)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f"train_cfg.best_metric: the evaluation has no metric {name!r}.{hint} Metrics: "
                              f"{', '.join(list(metrics)[:12])}{' ...' if len(metrics) > 12 else ''}.")
    if isinstance(spec, str):
        return spec, float(metrics[spec])
    value = sum(float(w) * float(metrics[n]) for n, w in spec.items())
    return ' + '.join(f'{float(w):g}*{n}' for n, w in spec.items()), value


def check_resume_tasks(ckpt_meta: Any, meta: Any, path: str) -> None:
    """CheckpointError when the checkpoint's task branches are not the run's (a multi-task run resumed with
    other branches, or a single-task checkpoint for a multi-task run and the reverse)."""
    old = (ckpt_meta or {}).get('tasks') if isinstance(ckpt_meta, Mapping) else None
    new = (meta or {}).get('tasks') if isinstance(meta, Mapping) else None
    if old is None and new is None:
        return
    if old is None or new is None:
        kind = 'a multi-task' if old is not None else 'a single-task'
        raise CheckpointError(f'Cannot resume from {path}: it is {kind} checkpoint and this run is '
                              f"{'single-task' if old is not None else 'multi-task'}.")
    if set(old) != set(new):
        missing = [t for t in old if t not in new]
        added = [t for t in new if t not in old]
        raise CheckpointError(f"Cannot resume from {path}: it was trained with branches {', '.join(old)}; this "
                              f"config has {', '.join(new)} (not in the config: {', '.join(missing) or 'none'}; "
                              f"new: {', '.join(added) or 'none'}). Resume with the same tasks, or start a new run "
                              'from its weights.')
