"""Optimizer from ``cfg.optim``: any ``torch.optim`` class, parameter groups by name prefix and no-decay rules.

Example config::

    optim = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
                 lr_mult=dict(backbone=0.1),          # name prefix -> lr multiplier
                 no_decay=('norm', 'bias', 'pos'))    # no weight decay on these
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import closest_names

__all__ = ['build_optimizer', 'param_groups', 'NORM_TYPES']

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                                nn.modules.instancenorm._InstanceNorm)
if hasattr(nn, 'RMSNorm'):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)


def _lr_multiplier(name: str, lr_mult: Mapping[str, float]) -> float:
    """The multiplier of the longest prefix of ``name`` (``'backbone'`` matches ``backbone.layer1.0.conv1.weight``)."""
    best, best_len = 1.0, -1
    for prefix, mult in lr_mult.items():
        if (name == prefix or name.startswith(prefix.rstrip('.') + '.')) and len(prefix) > best_len:
            best, best_len = float(mult), len(prefix)
    return best


def _is_no_decay(name: str, param: nn.Parameter, norm_params: set[int], no_decay: Iterable[str]) -> bool:
    """Whether ``param`` gets no weight decay.

    Tokens: ``'norm'`` = parameters of normalisation layers (by module type, so ``bn1`` counts), ``'bias'`` =
    every bias, any other token = a parameter whose name has a ``.``/``_``-separated part starting with it
    (``'pos'`` matches ``pos_embed`` and ``rel_pos_h``).
    """
    parts = re.split(r'[._]', name)
    for token in no_decay:
        if token == 'norm' and id(param) in norm_params:
            return True
        if token == 'bias' and name.split('.')[-1] == 'bias':
            return True
        if token not in ('norm', 'bias') and any(p.startswith(token) for p in parts):
            return True
    return False


def param_groups(model: nn.Module, lr: float, weight_decay: float, lr_mult: Mapping[str, float] | None = None,
                 no_decay: Iterable[str] = ('norm', 'bias', 'pos')) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimizer groups.

    Args:
        model: the model; parameters with ``requires_grad=False`` are left out.
        lr: base learning rate.
        weight_decay: base weight decay.
        lr_mult: name prefix -> learning-rate multiplier (longest prefix wins).
        no_decay: tokens naming parameters without weight decay (see :func:`_is_no_decay`).

    Returns:
        One dict per (multiplier, decay) pair: ``params``, ``lr``, ``weight_decay``, ``lr_mult``, ``name``
        (e.g. ``'backbone*0.1/no_decay'``) and ``param_names``.
    """
    lr_mult = dict(lr_mult or {})
    no_decay = tuple(no_decay or ())
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        mult = _lr_multiplier(name, lr_mult)
        decay = not _is_no_decay(name, param, norm_params, no_decay)
        key = (mult, decay)
        if key not in groups:
            groups[key] = {'params': [], 'param_names': [], 'lr': lr * mult, 'initial_lr': lr * mult,
                           'weight_decay': weight_decay if decay else 0.0, 'lr_mult': mult,
                           'name': f"x{mult:g}/{'decay' if decay else 'no_decay'}"}
        groups[key]['params'].append(param)
        groups[key]['param_names'].append(name)
    return list(groups.values())


# not SGD: on the CPU its fused kernel leaves the momentum buffer uninitialised when the first step is skipped
_FUSED = ('Adam', 'AdamW')


def _fusable(model: nn.Module) -> bool:
    """Whether every trainable parameter is a floating tensor on a device with fused optimizer kernels."""
    params = [p for p in model.parameters() if p.requires_grad]
    return bool(params) and all(p.is_floating_point() and p.device.type in ('cpu', 'cuda') for p in params)


def build_optimizer(model: nn.Module, optim_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build ``optim_cfg['optimizer']`` (``type`` = a ``torch.optim`` class name) over :func:`param_groups`.

    Adam and AdamW use the fused implementation unless the config sets ``fused`` or ``foreach``: the
    Trainer then skips a step with non-finite gradients on the device, with no host synchronisation.
    """
    opt_cfg = dict(optim_cfg.get('optimizer') or {})
    opt_type = opt_cfg.pop('type', 'SGD')
    names = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != 'Optimizer']
    if opt_type not in names:
        close = closest_names(str(opt_type), names)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise ConfigError(f"optim.optimizer.type {opt_type!r} is not a torch.optim optimizer.{hint}")
    if 'lr' not in opt_cfg:
        raise ConfigError("optim.optimizer needs an 'lr'.")
    lr = float(opt_cfg.pop('lr'))
    weight_decay = float(opt_cfg.pop('weight_decay', 0.0))
    groups = param_groups(model, lr, weight_decay, optim_cfg.get('lr_mult'),
                          optim_cfg.get('no_decay', ('norm', 'bias', 'pos')))
    if not groups:
        raise ConfigError('The model has no trainable parameters (all have requires_grad=False).')
    if opt_type in _FUSED and 'fused' not in opt_cfg and 'foreach' not in opt_cfg and _fusable(model):
        # one kernel per step, and the Trainer can skip a non-finite step on the device (found_inf) without
        # reading a flag back to the host every iteration
        opt_cfg['fused'] = True
    try:
        return getattr(torch.optim, opt_type)(groups, lr=lr, weight_decay=weight_decay, **opt_cfg)
    except TypeError as exc:
        raise ConfigError(f"optim.optimizer {opt_type}: {exc}") from exc
