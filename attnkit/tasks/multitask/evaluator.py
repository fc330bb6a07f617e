"""``MultiTaskEvaluator``: each task branch's own evaluator on its own validation set; metrics ``<task>/<metric>``.

Config (either form)::

    evaluator = dict(det=dict(type='CocoMetric'), seg=dict(type='IoUMetric'), vqa=dict(type='VQAAccuracy'))
    evaluator = dict(type='MultiTaskEvaluator', tasks=dict(det=..., seg=..., vqa=...))

The engine (:func:`attnkit.engine.evaluate.evaluate`) runs the model over each task's dataset in turn with
``batch['task'] = name`` and that task's evaluator, and returns the metrics of all tasks, each prefixed with its
task, in the order of the tasks (the first task's primary metric first).
"""
from __future__ import annotations

from typing import Any, Mapping

from ...builder import build_evaluator
from ...errors import ConfigError
from ...registry import METRICS

__all__ = ['MultiTaskEvaluator', 'build_multitask_evaluator', 'is_multitask_evaluator_cfg']


def is_multitask_evaluator_cfg(cfg: Any) -> bool:
    """Whether ``cfg`` is the short form ``dict(<task>=<evaluator cfg>, ...)`` (a dict of dicts, no ``type``)."""
    return (isinstance(cfg, Mapping) and 'type' not in cfg and bool(cfg)
            and all(isinstance(v, Mapping) for v in cfg.values()))


@METRICS.register_module()
class MultiTaskEvaluator:
    """One evaluator per task of a :class:`~attnkit.tasks.multitask.MultiTaskDataset`.

    Args:
        dataset: the evaluated ``MultiTaskDataset``: every one of its tasks needs an evaluator.
        tasks: task name -> evaluator config, built with that task's dataset.

    Attributes:
        evaluators: task -> built evaluator (``results`` etc. of the last evaluation).
        last_metrics: task -> that task's metrics (unprefixed) of the last evaluation.
    """

    def __init__(self, dataset: Any, tasks: Mapping[str, Mapping[str, Any]]) -> None:
        datasets = getattr(dataset, 'datasets', None)
        if not isinstance(datasets, Mapping):
            raise ConfigError('A per-task evaluator (evaluator=dict(<task>=dict(type=...), ...)) needs a '
                              "MultiTaskDataset to evaluate; this split's dataset is "
                              f'{type(dataset).__name__}.')
        missing = [t for t in datasets if t not in tasks]
        extra = [t for t in tasks if t not in datasets]
        if missing:
            raise ConfigError(f"The evaluator has no entry for task(s) {', '.join(missing)} of the evaluated data "
                              f"(evaluators given for: {', '.join(tasks) or 'none'}).")
        self.dataset = dataset
        # a task the split does not hold (a val split with fewer tasks than training) is skipped
        self.evaluators = {t: build_evaluator(tasks[t], dataset=datasets[t]) for t in datasets}
        self.skipped = extra
        self.last_metrics: dict[str, dict[str, float]] = {}

    def reset(self) -> None:
        for ev in self.evaluators.values():
            ev.reset()

    def num_samples(self) -> int:
        """Samples counted by all task evaluators in the last evaluation."""
        total = 0
        for ev in self.evaluators.values():
            counter = getattr(ev, 'num_samples', None)
            total += int(counter()) if callable(counter) else len(getattr(ev, 'results', []))
        return total

    def summary(self) -> str:
        """Each task's own summary under a ``[task]`` heading (tasks without one are left out)."""
        parts = []
        for task, ev in self.evaluators.items():
            text = ev.summary() if hasattr(ev, 'summary') else ''
            if text:
                parts.append(f'[{task}]\n{text}')
        return '\n'.join(parts)


def build_multitask_evaluator(cfg: Any, dataset: Any) -> Any:
    """The short form ``dict(<task>=<evaluator cfg>)`` as a :class:`MultiTaskEvaluator`; other configs as usual."""
    if is_multitask_evaluator_cfg(cfg):
        return MultiTaskEvaluator(dataset, dict(cfg))
    tasks = getattr(dataset, 'datasets', None)
    if isinstance(tasks, Mapping) and isinstance(cfg, Mapping) and cfg.get('type') not in ('MultiTaskEvaluator',
                                                                                         MultiTaskEvaluator):
        example = ', '.join(f"{t}=dict(type=...)" for t in tasks)
        raise ConfigError(f"The evaluated data is a MultiTaskDataset (tasks {', '.join(tasks)}): give one evaluator "
                          f"per task, evaluator=dict({example}); got {dict(cfg)!r:.80}.")
    return build_evaluator(cfg, dataset=dataset)
