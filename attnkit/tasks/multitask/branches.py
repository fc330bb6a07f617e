"""Task branches of a multi-task model: task kind -> single-task model class, built without a backbone.

A branch config is the single-task model's config without ``type``, ``backbone`` and ``normalize`` (shared by all
branches), plus ``task``::

    dict(task='detection', in_indices=(1, 2, 3), neck=dict(type='FPN', ...), head=dict(type='FCOSHead', ...))

It is built as that task model with ``backbone=None`` and ``feature_spec`` = the shared backbone's outputs, so
the branch's own code (neck wiring, losses, post-processing) runs on the shared features and its parameter names
are the single-task model's (``neck.*``, ``head.*``, ...).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Mapping

from torch import nn

from ...errors import ConfigError
from ...registry import MODELS, build, closest_names
from ..encoder import FeatureSpec

__all__ = ['TASK_MODELS', 'registered_tasks', 'task_model_type', 'check_branch_name', 'single_task_config',
           'build_branch']

# task kind -> registered model type (a task counts as registered once its model class is in MODELS)
TASK_MODELS: dict[str, str] = {'detection': 'Detector', 'segmentation': 'Segmentor', 'vqa': 'VQAModel',
                               'classification': 'ImageClassifier'}
SHARED_KEYS = ('type', 'backbone', 'normalize', 'feature_spec', 'metainfo')
_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def registered_tasks() -> list[str]:
    """The task kinds whose model class is registered."""
    return [t for t, m in TASK_MODELS.items() if m in MODELS.module_dict]


def task_model_type(task: Any, branch: str = '?') -> str:
    """The model type of task kind ``task``; ConfigError naming the registered tasks otherwise."""
    tasks = registered_tasks()
    if task not in tasks:
        close = closest_names(str(task), tasks)
        hint = f" Did you mean {close[0]!r}?" if close else ''
        raise ConfigError(f"MultiTaskModel branch {branch!r}: unknown task {task!r}.{hint} Registered tasks: "
                          f"{', '.join(tasks)}.")
    return TASK_MODELS[task]


def check_branch_name(name: Any) -> str:
    """A branch name must be an identifier (it becomes a parameter-name part and a ``<name>/`` log prefix)."""
    if not isinstance(name, str) or not _NAME.match(name) or hasattr(nn.ModuleDict, name):
        raise ConfigError(f'MultiTaskModel branch name {name!r}: use a Python identifier (letters, digits, _) that '
                          'is not a ModuleDict attribute (e.g. det, seg, vqa).')
    return name


def single_task_config(branch: Mapping[str, Any], backbone: Mapping[str, Any],
                       normalize: Mapping[str, Any] | None) -> dict[str, Any]:
    """The single-task model config equivalent to ``branch`` on ``backbone`` (for export and comparison)."""
    args = copy.deepcopy(dict(branch))
    task = args.pop('task', None)
    cfg = {'type': task_model_type(task), 'backbone': copy.deepcopy(dict(backbone)), **args}
    if normalize is not None:
        cfg['normalize'] = copy.deepcopy(dict(normalize))
    return cfg


def build_branch(name: str, cfg: Mapping[str, Any], feature_spec: FeatureSpec,
                 metainfo: Mapping[str, Any] | None, normalize: Mapping[str, Any] | None = None) -> nn.Module:
    """Branch ``name``: its task model built without a backbone, on features described by ``feature_spec``."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"MultiTaskModel branch {name!r} must be a dict(task=..., ...), got {cfg!r}.")
    args = dict(cfg)
    if 'task' not in args:
        raise ConfigError(f"MultiTaskModel branch {name!r} has no 'task' (one of: {', '.join(registered_tasks())}).")
    model_type = task_model_type(args.pop('task'), name)
    shared = [k for k in SHARED_KEYS if k in args]
    if shared:
        raise ConfigError(f"MultiTaskModel branch {name!r} sets {', '.join(shared)}: the backbone and the input "
                          'normalisation are shared (set them on the MultiTaskModel), and the rest is filled in.')
    model_cls = MODELS.get(model_type)
    return build(MODELS, {'type': model_cls, **args}, backbone=None, feature_spec=feature_spec,
                 metainfo=None if metainfo is None else dict(metainfo), normalize=normalize)
