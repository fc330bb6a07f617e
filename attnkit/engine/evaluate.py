"""The evaluation loop shared by ``Trainer.evaluate`` and ``attnkit test``: disjoint shares, merged in dataset
order, metrics computed once."""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .data import build_eval_loader
from .utils import to_device

__all__ = ['evaluate', 'merge_records', 'build_split_evaluator', 'batch_size_of']


def merge_records(per_process: Sequence[Sequence[tuple[int, int, Any]]]) -> list[Any]:
    """The records of all processes in dataset order.

    Args:
        per_process: for each process, its ``(sample index, position, record)`` triples.

    Returns:
        The records sorted by (sample index, position): the order one process would have produced.
    """
    keyed = [item for part in per_process for item in part]
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [record for _, _, record in keyed]


def build_split_evaluator(cfg: Any, dataset: Any) -> Any:
    """The evaluator of a split: ``build_evaluator(cfg)``, or for the per-task form ``dict(<task>=<evaluator
    cfg>, ...)`` a :class:`~attnkit.tasks.multitask.MultiTaskEvaluator` over the tasks of a multi-task dataset."""
    from ..tasks.multitask.evaluator import build_multitask_evaluator
    return build_multitask_evaluator(cfg, dataset)


def batch_size_of(part: Any, task: str | None = None, default: int = 1) -> int:
    """``part['batch_size']`` of a data split: an int, or per task (``dict(det=16, vqa=64)``) read for ``task``."""
    size = part.get('batch_size', default)
    if isinstance(size, Mapping):
        if task is None or task not in size:
            raise ConfigError(f"batch_size {dict(size)} is given per task but names no task {task!r}.")
        size = size[task]
    return int(size)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, evaluator: Any, accelerator: Any,
             batch_size: int | Mapping[str, int] = 1, num_workers: int = 0, channels_last: bool = False,
             progress: bool = False, seed: int = 0) -> dict[str, float]:
    """Run ``model`` over ``dataset`` and compute ``evaluator``'s metrics over all processes.

    A multi-task split (a ``MultiTaskDataset`` with a ``MultiTaskEvaluator``) is evaluated task by task: each
    task's dataset with ``batch['task'] = name``, its own evaluator and batch size (``batch_size`` may map task ->
    size); the metrics come back as ``<task>/<metric>``, tasks in order.

    Each process takes samples ``rank, rank + world, ...`` (no padding, not prepared by accelerate) and feeds
    ``model(batch)`` (eval mode, autocast as configured) to ``evaluator.process``. Then, whatever the number
    of processes:

    - the per-sample records (``evaluator.results``) of all processes are gathered and put back in dataset
      order (each record carries the index of its sample), so ties are broken the same way on 1 or N processes;
    - the evaluator's :meth:`~attnkit.evaluation.BaseEvaluator.sum_state` tensors are summed across processes
      (``all_reduce``) and loaded back;
    - ``compute()`` runs once, on the main process, and its metrics are broadcast to the others.

    Args:
        model: the unwrapped task model (or its EMA copy).
        dataset: the evaluation dataset.
        evaluator: a :class:`attnkit.evaluation.BaseEvaluator`.
        accelerator: the ``accelerate.Accelerator`` (device, process group, autocast).
        batch_size, num_workers: loader settings per process.
        channels_last: feed images as channels_last.
        progress: show a progress bar on the main process.
        seed: seeds any random transform of the evaluation pipeline per sample (``(seed, 0, index)``).

    Returns:
        The main process's ``evaluator.compute()`` on every process; ``evaluator.results`` holds the merged
        records (dataset order) on every process afterwards.
    """
    if hasattr(evaluator, 'evaluators') and hasattr(dataset, 'task_view'):  # multi-task: each task in turn
        metrics: dict[str, float] = {}
        for task, task_evaluator in evaluator.evaluators.items():
            size = batch_size_of({'batch_size': batch_size}, task)
            got = evaluate(model, dataset.task_view(task), task_evaluator, accelerator, size, num_workers,
                           channels_last, progress, seed)
            evaluator.last_metrics[task] = got
            metrics.update({f'{task}/{k}': v for k, v in got.items()})
        return metrics
    if isinstance(batch_size, Mapping):
        raise ConfigError(f'batch_size {dict(batch_size)} is given per task but the evaluated data is not '
                          'multi-task.')
    world = accelerator.num_processes
    loader = build_eval_loader(dataset, batch_size, num_workers, world, accelerator.process_index,
                               pin_memory=accelerator.device.type == 'cuda', seed=seed)
    index_batches = [list(b) for b in loader.batch_sampler]  # the sample indices of each batch, in order
    was_training = model.training
    model.eval()
    evaluator.reset()
    iterator = loader
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm
        iterator = tqdm(loader, desc='eval', leave=False, dynamic_ncols=True)
    keys: list[tuple[int, int]] = []  # (sample index, position) of each record in evaluator.results
    one_per_sample = True
    try:
        for k, batch in enumerate(iterator):
            batch = to_device(batch, accelerator.device, channels_last)
            with accelerator.autocast():
                predictions = model(batch)
            before = len(evaluator.results)
            evaluator.process(batch, predictions)
            added = len(evaluator.results) - before
            indices = index_batches[k]
            if added == len(indices):
                keys.extend((i, 0) for i in indices)
            else:  # not one record per sample: keep them together under the batch's first sample
                one_per_sample = one_per_sample and added == 0
                keys.extend((indices[0], j) for j in range(added))
    finally:
        model.train(was_training)
    if len(keys) != len(evaluator.results):  # process() rewrote earlier records: keep them as they are
        keys = [(0, j) for j in range(len(evaluator.results))]
    mine = [(i, j, r) for (i, j), r in zip(keys, evaluator.results)]
    if world > 1:
        from accelerate.utils import gather_object
        per_process = gather_object([mine])
        if not one_per_sample and accelerator.is_main_process:
            warnings.warn(f'{type(evaluator).__name__}.process does not add one record per sample: records are '
                          f'ordered by batch, which depends on the number of processes.')
    else:
        per_process = [mine]
    evaluator.results = merge_records(per_process)
    state = evaluator.sum_state()
    if state:
        if world > 1:
            state = {name: accelerator.reduce(t.to(accelerator.device), reduction='sum').cpu()
                     for name, t in state.items()}
        evaluator.load_sum_state({name: t.cpu() for name, t in state.items()})
    count = evaluator.num_samples()
    if count != len(dataset) and accelerator.is_main_process:
        warnings.warn(f'{type(evaluator).__name__} counted {count} samples for {len(dataset)} in the dataset '
                      f'(expected each sample once).')
    return _compute_on_main(evaluator, accelerator)


def _compute_on_main(evaluator: Any, accelerator: Any) -> dict[str, float]:
    """``evaluator.compute()`` on the main process, broadcast to all; an error there is raised everywhere."""
    out: Any = None
    error: BaseException | None = None
    if accelerator.is_main_process:
        try:
            out = ('ok', dict(evaluator.compute()))
        except Exception as exc:  # noqa: BLE001  the others must not wait for a broadcast that never comes
            if accelerator.num_processes == 1:
                raise
            error, out = exc, ('error', f'{type(exc).__name__}: {exc}')
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        out = broadcast_object_list([out], from_process=0)[0]
    if error is not None:
        raise error
    kind, value = out
    if kind == 'error':
        raise RuntimeError(f'{type(evaluator).__name__}.compute() failed on the main process: {value}')
    return value
