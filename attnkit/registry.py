"""Registries for every buildable part, and the one ``build`` function they share.

Each registry is an mmengine :class:`~mmengine.registry.Registry`; parts register with
``@ATTENTION.register_module('se')`` (or the class name when no name is given) and are built
from a config dict whose ``type`` names them::

    build(ATTENTION, dict(type='se', reduction=16), channels=256)

An unknown ``type`` raises :class:`attnkit.errors.ConfigError` naming the registry, the bad
name and the closest registered names; a wrong argument names the part and the argument.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterable, Mapping

from mmengine.registry import Registry

from .errors import ConfigError

ATTENTION = Registry('attention')
BACKBONES = Registry('backbone')
NECKS = Registry('neck')
HEADS = Registry('head')
MODELS = Registry('model')
DATASETS = Registry('dataset')
TRANSFORMS = Registry('transform')
METRICS = Registry('metric')
POOLING = Registry('pooling')  # downsamplers (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)): lip, softpool, ...
INFERENCERS = Registry('inferencer')  # model type -> function that runs ``attnkit infer`` for that task

__all__ = ['ATTENTION', 'BACKBONES', 'NECKS', 'HEADS', 'MODELS', 'DATASETS', 'TRANSFORMS', 'METRICS',
           'INFERENCERS', 'POOLING', 'build', 'get_registered', 'closest_names']


def closest_names(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.4) -> list[str]:
    """The names in ``choices`` most like ``name`` (case-insensitive, difflib ratio >= ``cutoff``), best first."""
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=cutoff)
    return [lowered[h] for h in hits]


def get_registered(registry: Registry, name: str) -> Any:
    """The class or function registered as ``name``; :class:`ConfigError` with suggestions if none."""
    obj = registry.module_dict.get(name)
    if obj is None:
        known = sorted(registry.module_dict)
        close = closest_names(name, known)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise ConfigError(f"Unknown {registry.name} type {name!r}.{hint} Registered {registry.name} types: "
                          f"{', '.join(known) or '(none)'}.")
    return obj


def build(registry: Registry, cfg: Mapping[str, Any] | None, **default_args: Any) -> Any:
    """Build ``cfg['type']`` from ``registry`` with the other keys (and ``default_args``) as arguments.

    Args:
        registry: where to look the type up.
        cfg: a dict (or mmengine ``ConfigDict``) with a ``type`` key naming a registered part, or a
            class/function object in ``type``. ``None`` returns ``None``.
        **default_args: arguments used when ``cfg`` does not set them (e.g. ``channels``).
    """
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"A {registry.name} config must be a dict with a 'type' key, got {cfg!r}.")
    args = dict(cfg)
    if 'type' not in args:
        raise ConfigError(f"The {registry.name} config {dict(cfg)!r} has no 'type' key.")
    obj_type = args.pop('type')
    obj = get_registered(registry, obj_type) if isinstance(obj_type, str) else obj_type
    for key, value in default_args.items():
        args.setdefault(key, value)
    _check_arguments(registry, obj_type, obj, args)
    return obj(**args)


def _check_arguments(registry: Registry, name: Any, obj: Any, args: dict) -> None:
    """Raise a readable ConfigError for an argument the part does not take."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in args:
        if key not in params:
            close = closest_names(key, accepted)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f"{registry.name} {name!r} has no argument {key!r}.{hint} "
                              f"It takes: {', '.join(accepted)}.")
