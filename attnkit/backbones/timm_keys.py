"""Key mapping from timm's ResNet family (``seresnet*``, ``ecaresnet*``, ``resnet*`` with ``attn_layer``) to
attnkit's :class:`~attnkit.backbones.resnet.ResNet`.

timm's ResNet blocks use torchvision's parameter names, plus:

* the block attention module is ``layerX.Y.se`` whatever its type (SE, ECA, CBAM); attnkit's is ``layerX.Y.attn``
  -> renamed when the model has an attention module in that block (the module must be built with
  ``layout='timm'`` for SE/CBAM, whose timm parameters are 1x1 convs);
* the "d"/"s"/"t" variants have a deep stem (``conv1.0``, ``conv1.1``, ``conv1.3``, ``conv1.4``, ``conv1.6`` + ``bn1``)
  -> not loaded: attnkit's stem is one 7x7 conv, so neither ``conv1`` nor ``bn1`` has a counterpart;
* "d" variants have an average-pool shortcut (``downsample.0`` pool, ``.1`` 1x1 conv, ``.2`` norm) -> loaded as
  attnkit's ``downsample.0``/``.1`` in ``layer1`` (where timm's pool is the identity: stride 1), not loaded in
  ``layer2``..``layer4`` (timm averages 2x2 then convolves, attnkit convolves with stride 2: another function).

The classifier ``fc.*`` is left to the caller (ResNet reports it as unused).
"""
from __future__ import annotations

import re
from typing import Collection, Mapping

from torch import Tensor

__all__ = ['adapt_timm_resnet_keys', 'DEEP_STEM_REASON', 'AVG_DOWN_REASON']

DEEP_STEM_REASON = "timm's deep stem (three 3x3 convs) has no counterpart in attnkit's 7x7 stem"
AVG_DOWN_REASON = ("timm's average-pool shortcut (2x2 avg pool + 1x1 conv) computes another function than "
                   "attnkit's strided 1x1 conv")

_ATTN = re.compile(r'^(layer\d+\.\d+)\.se\.(.+)$')
_DOWN = re.compile(r'^(layer(\d+)\.\d+)\.downsample\.(\d+)\.(.+)$')


def adapt_timm_resnet_keys(state_dict: Mapping[str, Tensor], own_keys: Collection[str]
                           ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename the timm keys of ``state_dict`` that have an attnkit counterpart and set aside those that do not.

    Args:
        state_dict: file keys -> tensors (prefixes already stripped).
        own_keys: the model's state-dict keys.

    Returns:
        ``(mapped, skipped)``: the state dict with attnkit names (keys the rules do not touch are kept as they
        are), and the file keys left out, each with the reason. A torchvision or attnkit state dict comes back
        unchanged with nothing skipped.
    """
    own = set(own_keys)
    attn_blocks = {k.split('.attn.', 1)[0] for k in own if '.attn.' in k}
    deep_stem = any(k.startswith('conv1.0.') for k in state_dict) and 'conv1.0.weight' not in own
    mapped: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for key, value in state_dict.items():
        if deep_stem and key.split('.', 1)[0] in ('conv1', 'bn1'):
            skipped[key] = DEEP_STEM_REASON
            continue
        match = _ATTN.match(key)
        if match and key not in own and match[1] in attn_blocks:
            key = f'{match[1]}.attn.{match[2]}'
        match = _DOWN.match(key)
        if match and f'{match[1]}.downsample.2.weight' in state_dict and f'{match[1]}.downsample.2.weight' not in own:
            if match[2] != '1':
                skipped[key] = AVG_DOWN_REASON
                continue
            key = f'{match[1]}.downsample.{int(match[3]) - 1}.{match[4]}'
        mapped[key] = value
    return mapped, skipped
