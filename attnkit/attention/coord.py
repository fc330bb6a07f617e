"""Coordinate attention (Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from .base import AttentionModule

__all__ = ['CoordAttention']


@ATTENTION.register_module('coord')
class CoordAttention(AttentionModule):
    """Direction-aware gates: pool along W and along H, shared 1x1 conv + BN + h-swish, then one
    sigmoid gate per row (C, H, 1) and per column (C, 1, W): ``out = x * a_h * a_w``.

    Args:
        channels: C.
        reduction, min_channels: hidden width ``max(min_channels, C // reduction)`` (paper: 32, 8).
        identity_init: exact identity at init.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: channel mean of ``a_h * a_w`` (N, 1, H, W).
    """

    def __init__(self, channels: int, *, reduction: int = 32, min_channels: int = 8,
                 identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        hidden = max(min_channels, channels // reduction)
        self.conv = nn.Conv2d(channels, hidden, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def attend(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        pooled = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], 2)  # (N, C, H+W, 1)
        y = F.hardswish(self.bn(self.conv(pooled)))
        y_h, y_w = y.split([h, w], 2)
        a_h = torch.sigmoid(self.conv_h(y_h))  # (N, C, H, 1)
        a_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (N, C, 1, W)
        if self._recorder is not None:
            self.record_map((a_h * a_w).mean(1, keepdim=True))
        return x * a_h * a_w
