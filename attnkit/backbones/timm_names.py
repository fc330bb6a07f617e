"""Names of a timm ``features_only`` model in timm's own (classification model) terms.

``timm.create_model(name, features_only=True)`` re-houses the classification model's modules: ``FeatureListNet``
flattens top-level ``Sequential`` containers (``stages.3`` becomes ``stages_3``), ``FeatureGetterNet`` keeps the
whole model under ``model.``, and families with their own feature class (EfficientNet) keep the names. Users and
checkpoints speak the classification model's names; :func:`display_names` maps those to the features model's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ['reference_model', 'display_names', 'to_display', 'display_state_keys']


def reference_model(model_name: str, **timm_kwargs: Any) -> nn.Module:
    """timm's classification model ``model_name`` built on the ``meta`` device (names and shapes only, no memory,
    no weights, no download)."""
    import timm

    with torch.device('meta'):
        return timm.create_model(model_name, pretrained=False, **timm_kwargs)


def _top_level_prefixes(features: nn.Module, reference: nn.Module) -> dict[str, str]:
    """features-model top-level child name -> the reference model's path of the same module."""
    ref_children = dict(reference.named_children())
    flattened = {f'{a}_{b}': f'{a}.{b}' for a, seq in ref_children.items() if isinstance(seq, nn.Sequential)
                 for b, _ in seq.named_children()}
    prefixes: dict[str, str] = {}
    for name, child in features.named_children():
        if name in ref_children and type(ref_children[name]) is type(child):
            prefixes[name] = name
        elif name in flattened:
            prefixes[name] = flattened[name]
        elif name == 'model' and type(child) is type(reference):  # FeatureGetterNet keeps the whole model
            prefixes[name] = ''
    return prefixes


def display_names(features: nn.Module, reference: nn.Module) -> dict[str, str]:
    """Display (classification-model) name -> features-model path, for every module of ``features`` that is the
    same module type at that name in ``reference``; ``''`` (the classification model itself) is listed only when
    the features model holds it whole (``FeatureGetterNet``: ``'' -> 'model'``).

    Raises:
        ConfigError: the features model's names could not be related to the classification model's.
    """
    ref_types = {name: type(m) for name, m in reference.named_modules()}
    out: dict[str, str] = {}
    for top, prefix in _top_level_prefixes(features, reference).items():
        for rest, module in features.get_submodule(top).named_modules():
            real = f'{top}.{rest}' if rest else top
            display = '.'.join(p for p in (prefix, rest) if p)
            if ref_types.get(display) is type(module):
                out[display] = real
    if not [d for d in out if d]:
        raise ConfigError(f'TimmBackbone: cannot relate the module names of the timm features model '
                          f'({type(features).__name__}) to those of {type(reference).__name__}.')
    return out


def to_display(real: str, real_to_display: dict[str, str]) -> str | None:
    """The display name of features-model name ``real`` (a module, parameter or buffer path), through the longest
    module prefix that has one; ``None`` when no prefix does."""
    parts = real.split('.')
    for k in range(len(parts), 0, -1):
        head = '.'.join(parts[:k])
        if head in real_to_display:
            return '.'.join(p for p in (real_to_display[head], *parts[k:]) if p)
    return None


def display_state_keys(features: nn.Module, names: dict[str, str]) -> dict[str, str]:
    """Display state-dict key (as in the classification model's checkpoints) -> features-model state-dict key."""
    inverse = {real: display for display, real in names.items()}
    out = {}
    for key in features.state_dict():
        display = to_display(key, inverse)
        if display is not None:
            out[display] = key
    return out
