"""Normalisation layers for the backbones, chosen by a short name."""
from __future__ import annotations

import math

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..errors import ConfigError

__all__ = ['NORMS', 'build_norm', 'is_batch_norm']

NORMS = ('bn', 'syncbn', 'frozen_bn', 'gn')


def build_norm(norm: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer over ``channels`` channels.

    Args:
        norm: ``'bn'`` (``nn.BatchNorm2d``), ``'syncbn'`` (``nn.SyncBatchNorm``; plain batch norm when no
            process group is running), ``'frozen_bn'`` (``torchvision.ops.FrozenBatchNorm2d``: statistics
            and affine are buffers, never trained) or ``'gn'`` (``nn.GroupNorm`` with 32 groups, or the
            greatest common divisor of 32 and ``channels`` for narrow test models).
        channels: number of channels C of the (N, C, H, W) input.

    Parameter and buffer names (``weight``, ``bias``, ``running_mean``, ``running_var``) match
    ``nn.BatchNorm2d`` for every batch-norm flavour, so ImageNet state dicts load into all of them.
    """
    if norm == 'bn':
        return nn.BatchNorm2d(channels)
    if norm == 'syncbn':
        return nn.SyncBatchNorm(channels)
    if norm == 'frozen_bn':
        return FrozenBatchNorm2d(channels)
    if norm == 'gn':
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ConfigError(f"Unknown backbone norm {norm!r}; choose one of {', '.join(repr(n) for n in NORMS)}.")


def is_batch_norm(module: nn.Module) -> bool:
    """True for trainable batch-norm layers (BatchNorm*d, SyncBatchNorm) whose mode matters."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)
