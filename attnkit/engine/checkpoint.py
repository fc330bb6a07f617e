"""Checkpoints: atomic ``.pth`` files of tensors and plain containers, ``model.safetensors``, ``load_model``.

Layout (docs/design.md)::

    {'model': state_dict, 'meta': metainfo, 'optimizer', 'scheduler', 'ema', 'scaler', 'rng': [per process],
     'epoch', 'iter', 'iter_in_epoch', 'best', 'config': cfg text}

Every file loads with ``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import random
import warnings
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ['save_atomic', 'load_checkpoint', 'get_rng_state', 'set_rng_state', 'save_safetensors',
           'load_weights', 'load_model', 'check_state_dict', 'training_only_prefixes', 'reconcile_training_only']


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path + '.tmp'``, then ``os.replace``: a crash mid-write leaves the old file intact."""
    path = os.fspath(path)
    tmp = path + '.tmp'
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our ``.pth`` checkpoints (``weights_only=True``); CheckpointError if missing or unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'Checkpoint {path!r} does not exist.')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # truncated file, pickle of arbitrary objects, not a torch file
        raise CheckpointError(f'Checkpoint {path!r} could not be read: {type(exc).__name__}: '
                              f'{str(exc).splitlines()[0] if str(exc) else ""}') from exc
    if not isinstance(ckpt, dict) or 'model' not in ckpt:
        raise CheckpointError(f"Checkpoint {path!r} is not an attnkit checkpoint (no 'model' entry).")
    return ckpt


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states as tensors and plain containers."""
    np_state = np.random.get_state(legacy=False)
    state = {'python': random.getstate(),
             'numpy': {'bit_generator': np_state['bit_generator'],
                       'key': torch.from_numpy(np.asarray(np_state['state']['key'], dtype=np.int64)),
                       'pos': int(np_state['state']['pos']), 'has_gauss': int(np_state['has_gauss']),
                       'gauss': float(np_state['gauss'])},
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state['numpy']
    np.random.set_state({'bit_generator': n['bit_generator'],
                         'state': {'key': n['key'].numpy().astype(np.uint32), 'pos': n['pos']},
                         'has_gauss': n['has_gauss'], 'gauss': n['gauss']})
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _plain_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_safetensors(state: Mapping[str, torch.Tensor], metainfo: Mapping[str, Any] | None,
                     path: str | os.PathLike, extra: Mapping[str, str] | None = None) -> None:
    """Write weights as safetensors (atomically), with ``metainfo`` as JSON under the metadata key ``meta``."""
    from safetensors.torch import save_file
    path = os.fspath(path)
    metadata = {'format': 'pt', 'meta': json.dumps(metainfo or {})}
    metadata.update(extra or {})
    tmp = path + '.tmp'
    try:
        save_file(_plain_state_dict(state), tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """``(state_dict, metainfo)`` from our ``.pth`` (EMA weights if it has them) or a ``.safetensors`` file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'Checkpoint {path!r} does not exist.')
    if path.endswith('.safetensors'):
        from safetensors import safe_open
        try:
            with safe_open(path, framework='pt') as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise CheckpointError(f'Checkpoint {path!r} could not be read as safetensors: {exc}') from exc
        meta = json.loads(metadata['meta']) if 'meta' in metadata else None
        return state, meta
    ckpt = load_checkpoint(path)
    ema = ckpt.get('ema')
    state = ema['state'] if isinstance(ema, dict) and 'state' in ema else ckpt['model']
    return state, ckpt.get('meta')


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    """CheckpointError naming missing/unexpected keys and shape mismatches when ``state`` doesn't fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}' for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:

        def head(items: list[str]) -> str:
            return (', '.join(items[:5]) + (f' (+{len(items) - 5} more)' if len(items) > 5 else '')) or 'none'
        msg = (f'checkpoint {path} was written for another model: missing keys {head(missing)}, '
               f'unexpected {head(unexpected)}')
        if shapes:
            msg += f', shape mismatch (checkpoint vs model) {head(shapes)}'
        raise CheckpointError(msg + '.')


def load_model(cfg: Mapping[str, Any], checkpoint_path: str | os.PathLike) -> nn.Module:
    """Build ``cfg.model`` with the checkpoint's metainfo and load its weights; the model is in eval mode.

    Args:
        cfg: the config (its ``model`` section is built).
        checkpoint_path: our ``.pth`` checkpoint (EMA weights preferred) or ``model.safetensors``.

    Raises:
        CheckpointError: missing/unreadable file, or weights that do not fit the model.
    """
    from ..builder import build_model
    from .utils import import_custom_modules
    import_custom_modules(cfg)
    path = os.fspath(checkpoint_path)
    state, meta = load_weights(path)
    model = build_model(skip_backbone_weights(cfg['model']), metainfo=meta)
    state = reconcile_training_only(model, state, path)
    check_state_dict(model, state, path)
    model.load_state_dict(state)
    return model.eval()


def skip_backbone_weights(model_cfg: Mapping[str, Any]) -> Any:
    """``model_cfg`` with its backbone's ``pretrained`` weights file not read: a checkpoint replaces every weight.

    ``attnkit test/infer`` of the VQA demo then works without the stage-1 file at the config's path. The
    structure does not change: a backbone whose ``identity_init`` defaults to "``pretrained`` given" keeps the
    value the file implied. Backbones without both arguments (a Hugging Face model dir) are left as they are.
    """
    from ..registry import BACKBONES
    backbone = model_cfg.get('backbone') if isinstance(model_cfg, Mapping) else None
    if not isinstance(backbone, Mapping) or not backbone.get('pretrained') or not isinstance(backbone.get('type'), str):
        return model_cfg
    cls = BACKBONES.module_dict.get(backbone['type'])
    params = inspect.signature(cls).parameters if cls is not None else {}
    if 'pretrained' not in params or 'identity_init' not in params:
        return model_cfg
    out = copy.deepcopy(model_cfg)
    if out['backbone'].get('identity_init') is None:
        out['backbone']['identity_init'] = True
    out['backbone']['pretrained'] = None
    return out


def training_only_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of parts used only in training that ``model`` may lack (e.g. a VQA model's answer-bag
    conv, ``answer_bag.``): every submodule's class attribute ``training_only_prefixes``, under its path."""
    prefixes = []
    for name, module in model.named_modules():
        for prefix in getattr(type(module), 'training_only_prefixes', ()):
            prefixes.append(f'{name}.{prefix}' if name else prefix)
    return prefixes


def reconcile_training_only(model: nn.Module, state: Mapping[str, torch.Tensor],
                            path: str) -> dict[str, torch.Tensor]:
    """``state`` fitted to ``model`` for inference in the parts used only in training
    (:func:`training_only_prefixes`, e.g. a VQA model's answer-bag conv), both ways:

    - keys of such parts that ``model`` was built without are dropped (a checkpoint trained with an auxiliary loss
      loads into the config without it);
    - such parts that ``model`` has but the checkpoint lacks keep ``model``'s own initial weights (a checkpoint
      trained without the loss loads into a config with it; the part is unused in eval mode).

    Each case is reported by one warning that counts the weights and names the parts. Any other mismatch is left
    for :func:`check_state_dict`; resuming training does not call this (it stays strict).
    """
    own = model.state_dict()
    prefixes = tuple(training_only_prefixes(model))
    if not prefixes:
        return dict(state)

    def parts(keys: list[str]) -> str:
        return ', '.join(sorted({k.rsplit('.', 1)[0] for k in keys}))
    dropped = [k for k in state if k not in own and k.startswith(prefixes)]
    missing = [k for k in own if k not in state and k.startswith(prefixes)]
    if dropped:
        warnings.warn(f'{path}: {len(dropped)} weights of training-only parts not in this model were not loaded '
                      f'({parts(dropped)}).')
    if missing:
        warnings.warn(f'{path}: {len(missing)} weights of training-only parts are not in the checkpoint; they keep '
                      f'their initial values and are not used for inference ({parts(missing)}).')
    fitted = {k: v for k, v in state.items() if k not in set(dropped)}
    fitted.update({k: own[k] for k in missing})
    return fitted
