"""Loading configs: mmengine Python configs with ``_base_`` inheritance and ``--cfg-options`` overrides."""
from __future__ import annotations

import os
import warnings
from typing import Any, Mapping

from mmengine.config import Config

from .config_values import parse_option_value
from .errors import ConfigError
from .registry import closest_names

__all__ = ['load_config', 'check_config', 'Config', 'SECTIONS', 'MMENGINE_NAMES', 'DATA_SPLITS', 'LOADER_KEYS']

# Every top-level key attnkit reads (grep cfg.get / cfg[ in attnkit/); other top-level names are config variables
# (data_root, train_pipeline, img_size...), used while the file is read and ignored afterwards.
SECTIONS = ('task', 'model', 'data', 'evaluator', 'optim', 'schedule', 'runtime', 'train_cfg', 'work_dir',
            'custom_imports', 'infer_cfg')
# mmdetection / mmengine section names: a config written for those frameworks, or a habit, names what attnkit calls
# it instead of being silently ignored.
MMENGINE_NAMES: dict[str, str | None] = {
    'optimizer': 'optim.optimizer', 'optim_wrapper': 'optim', 'optimizer_config': 'optim.grad_clip',
    'auto_scale_lr': 'optim.optimizer.lr', 'momentum_config': 'optim.optimizer',
    'train_dataloader': 'data.train', 'val_dataloader': 'data.val', 'test_dataloader': 'data.test',
    'val_evaluator': 'evaluator', 'test_evaluator': 'evaluator',
    'evaluation': 'evaluator and train_cfg.eval_interval',
    'param_scheduler': 'schedule', 'lr_config': 'schedule', 'lr_scheduler': 'schedule',
    'runner': 'schedule.max_epochs / schedule.max_iters', 'total_epochs': 'schedule.max_epochs',
    'val_cfg': 'train_cfg.eval_interval', 'test_cfg': 'data.test and the model head',
    'workflow': 'train_cfg.eval_interval',
    'default_hooks': 'train_cfg (checkpoint_interval) and runtime (log_interval)',
    'checkpoint_config': 'train_cfg.checkpoint_interval', 'log_config': 'runtime.log_interval',
    'log_processor': 'runtime.log_interval', 'custom_hooks': 'train_cfg.ema / train_cfg.early_stopping',
    'load_from': "the model's init_from / pretrained, or attnkit train --resume PATH",
    'resume_from': 'attnkit train --resume PATH', 'resume': 'attnkit train --resume',
    'auto_resume': 'attnkit train --resume',
    'env_cfg': 'runtime', 'randomness': 'runtime.seed / runtime.deterministic', 'dist_params': 'accelerate launch',
    'launcher': 'accelerate launch', 'fp16': 'runtime.mixed_precision (or --amp)',
    'vis_backends': 'runtime.tensorboard', 'visualizer': 'attnkit infer',
    'model_wrapper_cfg': 'runtime.find_unused_parameters', 'default_scope': None, 'log_level': None,
}
DATA_SPLITS = ('train', 'val', 'test')
# What the engine reads from data.train / data.val / data.test (engine/trainer.py, engine/evaluate.py, cli.py).
LOADER_KEYS = ('dataset', 'batch_size', 'num_workers', 'shuffle', 'drop_last', 'group_by', 'max_per_group',
               'sampler')
_CLOSE = 0.75  # difflib ratio from which an unknown top-level name is taken for a misspelt section


def load_config(path: str | os.PathLike, cfg_options: Mapping[str, Any] | None = None) -> Config:
    """Read ``path`` (resolving ``_base_`` files) and apply dotted overrides.

    Args:
        path: a ``.py`` config file.
        cfg_options: ``{'model.backbone.depth': 18, 'data.train.batch_size': 4}``: each dotted key must
            name an existing key (a typo is an error, not a silently added setting) except the last
            part, which may be new.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist.")
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # syntax errors, missing _base_ files
        raise ConfigError(f"Could not read config {path!r}: {exc}") from exc
    if cfg_options:
        cfg_options = {k: parse_option_value(k, v) for k, v in cfg_options.items()}
        for key in cfg_options:
            _check_option_target(cfg, key, path)
            _check_dotted_key(cfg, key, path)
        cfg.merge_from_dict(dict(cfg_options))
    check_config(cfg, path)
    return cfg


def _hint(name: str, choices: Any) -> str:
    close = closest_names(name, choices, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ''


def _paths_ending_in(node: Any, key: str, prefix: str = '', depth: int = 0) -> list[str]:
    """Dotted paths of ``node`` whose last part is ``key`` (to suggest where a bare --cfg-options key belongs)."""
    found: list[str] = []
    if isinstance(node, Mapping) and depth < 6:
        for k, v in node.items():
            path = f'{prefix}{k}'
            if k == key:
                found.append(path)
            found += _paths_ending_in(v, key, path + '.', depth + 1)
    return found


def _check_option_target(cfg: Config, key: str, path: str) -> None:
    """A --cfg-options key must change a setting: not a new top-level name, not a config variable (already used
    when the file was read, so overriding it changes nothing)."""
    top = key.split('.')[0]
    if top in SECTIONS:
        return
    if top in MMENGINE_NAMES:
        raise ConfigError(f"--cfg-options key {key!r}: {top!r} is an mmdetection/mmengine setting; "
                          f"{_what_attnkit_calls(top)}.")
    data = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    if top not in data:
        close = closest_names(top, SECTIONS, cutoff=_CLOSE)
        settings = [] if close or '.' in key else _paths_ending_in({k: data[k] for k in SECTIONS if k in data}, key)
        if settings:  # a bare key that is the last part of real settings: batch_size -> data.train.batch_size
            hint = f" Did you mean {' or '.join(repr(p) for p in settings[:2])}?"
        else:
            hint = f" Did you mean {close[0]!r}?" if close else f" Top-level settings: {', '.join(SECTIONS)}."
        raise ConfigError(f"--cfg-options key {key!r}: config {path!r} has no top-level setting {top!r}.{hint}")
    warnings.warn(f"--cfg-options {key}: {top!r} is a variable of config {path!r}, already used when the file was "
                  "read; overriding it changes nothing. Override the settings that use it instead.", stacklevel=3)


def check_config(cfg: Any, path: str | None = None) -> None:
    """Raise a ConfigError for settings attnkit would silently ignore.

    * a top-level name that is an mmdetection/mmengine section (``optimizer``, ``train_dataloader``,
      ``val_evaluator``...) or is close to one of attnkit's sections (``evaluater``, ``modle``): the error names
      what attnkit calls it. Other top-level names are config variables and are left alone (names starting with
      ``_`` are never checked);
    * ``data`` keys other than ``train``, ``val``, ``test``; loader keys other than :data:`LOADER_KEYS`, and
      loader values of the wrong type (``batch_size='abc'``);
    * unknown keys of ``runtime``, ``optim``, ``schedule`` and ``train_cfg`` (the Trainer checks these too; here
      they are also caught for ``attnkit test``).

    Args:
        cfg: a loaded config (or a plain mapping).
        path: the config file, named in errors (default ``cfg.filename``).
    """
    where = path or getattr(cfg, 'filename', None)
    src = f'Config {os.fspath(where)!r}' if where else 'The config'
    data_dict = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for name in list(data_dict.keys()):
        if not isinstance(name, str) or name.startswith('_') or name in SECTIONS:
            continue
        if name in MMENGINE_NAMES:
            raise ConfigError(f"{src}: top-level {name!r} is an mmdetection/mmengine setting that attnkit does not "
                              f"read; {_what_attnkit_calls(name)}.")
        close = closest_names(name, SECTIONS, cutoff=_CLOSE)
        if close:
            raise ConfigError(f"{src}: unknown top-level setting {name!r}; did you mean {close[0]!r}? (A config "
                              "variable must not look like a section name: rename it.)")
    for section in ('runtime', 'optim', 'schedule', 'train_cfg'):
        _check_section(data_dict, section, src)
    _check_data(data_dict.get('data'), src)


def _what_attnkit_calls(name: str) -> str:
    target = MMENGINE_NAMES[name]
    return f'attnkit calls it {target}' if target else 'attnkit has no such setting: remove it'


def _check_section(cfg: Mapping[str, Any], name: str, src: str) -> None:
    value = cfg.get(name)
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ConfigError(f"{src}: {name} must be a dict, got {value!r:.80}.")
    from .engine.utils import DEFAULT_OPTIM, DEFAULT_RUNTIME, DEFAULT_SCHEDULE, DEFAULT_TRAIN_CFG, section
    known = {'runtime': DEFAULT_RUNTIME, 'optim': DEFAULT_OPTIM, 'schedule': DEFAULT_SCHEDULE,
             'train_cfg': DEFAULT_TRAIN_CFG}[name]
    try:
        section(cfg, name, known)  # the Trainer's own check of the section's keys, run when the config is read
    except ConfigError as exc:
        raise ConfigError(f'{src}: {exc}') from exc


def _check_data(data: Any, src: str) -> None:
    if data is None:
        return
    if not isinstance(data, Mapping):
        raise ConfigError(f"{src}: data must be a dict of train/val/test loaders, got {data!r:.80}.")
    for split, loader in data.items():
        if split not in DATA_SPLITS:
            raise ConfigError(f"{src}: unknown key data.{split}.{_hint(str(split), DATA_SPLITS)} data holds "
                              "train, val and test.")
        if loader is None:
            continue
        if not isinstance(loader, Mapping):
            raise ConfigError(f"{src}: data.{split} must be a dict (dataset=..., batch_size=...), got {loader!r:.80}.")
        for key, value in loader.items():
            name = f'data.{split}.{key}'
            if key not in LOADER_KEYS:
                raise ConfigError(f"{src}: unknown key {name}.{_hint(str(key), LOADER_KEYS)} Known: "
                                  f"{', '.join(LOADER_KEYS)}.")
            _check_loader_value(name, key, value, src)


def _check_loader_value(name: str, key: str, value: Any, src: str) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(value, Mapping) and key in ('batch_size', 'group_by'):  # per task of a MultiTaskDataset
        for task, v in value.items():
            _check_loader_value(f'{name}.{task}', key, v, src)
        return
    if key == 'batch_size' and not (is_int(value) and value >= 1):
        raise ConfigError(f"{src}: {name} must be an integer >= 1, got {value!r:.60}.")
    if key == 'num_workers' and not (is_int(value) and value >= 0):
        raise ConfigError(f"{src}: {name} must be an integer >= 0, got {value!r:.60}.")
    if key in ('shuffle', 'drop_last') and not (isinstance(value, bool) or value in (0, 1)):
        raise ConfigError(f"{src}: {name} must be True or False, got {value!r:.60}.")
    if key == 'group_by' and not (value is None or isinstance(value, str)):
        raise ConfigError(f"{src}: {name} must be a name such as 'image' or None, got {value!r:.60}.")
    if key == 'sampler' and not (value is None or isinstance(value, Mapping)):
        raise ConfigError(f"{src}: {name} must be a dict such as dict(mode='temperature', T=2), got {value!r:.60}.")
    if key == 'dataset' and value is not None and not (isinstance(value, Mapping)
                                                       and isinstance(value.get('type'), str)):
        raise ConfigError(f"{src}: {name} must be a dict with a 'type', got {value!r:.80}.")


def _check_dotted_key(cfg: Config, key: str, path: str) -> None:
    node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg  # Config itself is not a Mapping
    parts = key.split('.')
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping) or part not in node:
            where = '.'.join(parts[:depth]) or '<top level>'
            hint = _hint(part, [str(k) for k in node]) if isinstance(node, Mapping) else ''
            raise ConfigError(f"--cfg-options key {key!r}: {where!r} of config {path!r} has no key {part!r}.{hint}")
        node = node[part]
