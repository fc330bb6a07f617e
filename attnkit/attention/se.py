"""Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from ._layout import check_layout, hidden_width
from .base import AttentionModule

__all__ = ['SEModule', 'linear']


def linear(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer`` (an ``nn.Linear``, or a 1x1 ``nn.Conv2d`` as timm stores it) applied to x (N, C_in) -> (N, C_out)."""
    return F.linear(x, layer.weight.flatten(1), layer.bias)


@ATTENTION.register_module('se')
class SEModule(AttentionModule):
    """Channel gate ``x * sigmoid(W2 relu(W1 mean_hw(x)))``.

    Args:
        channels: C.
        reduction: hidden width is ``max(min_channels, C // reduction)`` (see ``divisor``).
        min_channels: lower bound of the hidden width.
        layout: ``'attnkit'``: ``fc1``/``fc2`` are ``nn.Linear`` (the layout of attnkit checkpoints);
            ``'timm'``: 1x1 ``nn.Conv2d`` with bias, as ``timm.layers.SEModule`` (``fc1.weight`` (hidden, C, 1, 1)),
            so timm's SE-ResNet weights load.
        divisor: when set, the hidden width is timm's ``make_divisible(C / reduction, divisor)`` (nearest multiple,
            at least ``divisor``; ``min_channels`` unused). Default: None for ``'attnkit'``, 8 for ``'timm'``
            (timm's ``rd_ratio=1/16, rd_divisor=8``).
        identity_init: exact identity at init (see :class:`AttentionModule`).

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: channel weights (N, C).
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_channels: int = 8, layout: str = 'attnkit',
                 divisor: int | None = None, identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.layout = check_layout('SEModule', layout)
        if divisor is None and layout == 'timm':
            divisor = 8
        hidden = hidden_width(channels, reduction, min_channels, divisor)
        if layout == 'timm':
            self.fc1: nn.Module = nn.Conv2d(channels, hidden, 1)
            self.fc2: nn.Module = nn.Conv2d(hidden, channels, 1)
        else:
            self.fc1 = nn.Linear(channels, hidden)
            self.fc2 = nn.Linear(hidden, channels)

    def attend(self, x: Tensor) -> Tensor:
        weights = torch.sigmoid(linear(self.fc2, F.relu(linear(self.fc1, x.mean((2, 3))))))  # (N, C)
        self.record_map(weights)
        return x * weights[:, :, None, None]

    def extra_repr(self) -> str:
        return super().extra_repr() + (", layout='timm'" if self.layout == 'timm' else '')
