"""Squeeze-and-excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from .base import AttentionModule

__all__ = ['SEModule']


@ATTENTION.register_module('se')
class SEModule(AttentionModule):
    """Channel gate ``x * sigmoid(W2 relu(W1 mean_hw(x)))``.

    Args:
        channels: C.
        reduction: hidden width is ``max(min_channels, C // reduction)``.
        min_channels: lower bound of the hidden width.
        identity_init: exact identity at init (see :class:`AttentionModule`).

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: channel weights (N, C).
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_channels: int = 8,
                 identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        hidden = max(min_channels, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def attend(self, x: Tensor) -> Tensor:
        weights = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))  # (N, C)
        self.record_map(weights)
        return x * weights[:, :, None, None]
