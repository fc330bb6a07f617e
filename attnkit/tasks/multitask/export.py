"""``attnkit multitask export-branch CONFIG CKPT --branch NAME --out DIR``: one branch as a single-task checkpoint.

The multi-task checkpoint is loaded into its ``MultiTaskModel``; ``MultiTaskModel.export_branch`` writes the
shared backbone + that branch under the single-task model's parameter names, with the branch's metainfo, as
``DIR/model.safetensors``, and the equivalent single-task model config as ``DIR/model_config.py``. A single-task
config with that model (the same backbone, neck and head) loads it:
``attnkit test SINGLE_TASK_CONFIG DIR/model.safetensors``.
"""
from __future__ import annotations

import os
import pprint
from typing import Any, Mapping

from ...errors import ConfigError
from ...registry import closest_names

__all__ = ['export_branch_checkpoint']


def _plain(obj: Any) -> Any:
    """Config values as plain dicts / lists / tuples (for a readable, loadable ``model_config.py``)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if type(obj) in (list, tuple) else [_plain(v) for v in obj]
    return obj


def export_branch_checkpoint(cfg: Mapping[str, Any], checkpoint: str, branch: str, out_dir: str) -> str:
    """Write branch ``branch`` of the multi-task ``checkpoint`` as ``<out_dir>/model.safetensors``; return its path.

    Raises:
        ConfigError: the config is not a multi-task model, an unknown branch (the branches are named), or
            ``out_dir`` is a file.
        CheckpointError: the checkpoint does not fit the config's model.
    """
    from ...engine import load_model
    model_type = (cfg.get('model') or {}).get('type')
    if model_type != 'MultiTaskModel':
        raise ConfigError(f"export-branch needs a multi-task config (model type 'MultiTaskModel'), this one builds "
                          f'{model_type!r}.')
    branches = list(((cfg.get('model') or {}).get('branches') or {}))
    if branch not in branches:
        close = closest_names(branch, branches)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise ConfigError(f"No branch {branch!r} in the config.{hint} Branches: {', '.join(branches)}.")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f'--out {out_dir!r} is a file; export-branch writes model.safetensors into a folder.')
    model = load_model(cfg, checkpoint)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'model.safetensors')
    model.export_branch(branch, path)
    source = getattr(cfg, 'filename', None) or 'the config'
    model_cfg = pprint.pformat(_plain(model.branch_config(branch)), width=110, sort_dicts=False)
    with open(os.path.join(out_dir, 'model_config.py'), 'w', encoding='utf-8') as f:
        f.write(f'# The single-task model of branch {branch!r} of {source}; its weights: model.safetensors.\n'
                f'model = {model_cfg}\n')
    return path
