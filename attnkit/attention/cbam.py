"""Convolutional block attention module (Woo et al., "CBAM", ECCV 2018): channel gate, then spatial gate."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from .base import AttentionModule

__all__ = ['CBAMModule']


@ATTENTION.register_module('cbam')
class CBAMModule(AttentionModule):
    """``y = x * Mc(x)``, ``out = y * Ms(y)``.

    ``Mc = sigmoid(MLP(avgpool x) + MLP(maxpool x))`` (shared MLP); ``Ms = sigmoid(conv7x7([mean_c y; max_c y]))``.
    The spatial conv has a bias and no BatchNorm (BatchNorm of a one-channel map fails on 1x1 inputs of
    batch 1).

    Args:
        channels: C.
        reduction, min_channels: MLP hidden width ``max(min_channels, C // reduction)``.
        spatial_kernel: odd kernel size of the spatial conv (7).
        identity_init: exact identity at init.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded maps: spatial (N, 1, H, W) under the module
    name, channel weights (N, C) under ``name + '.channel'``.
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_channels: int = 8, spatial_kernel: int = 7,
                 identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f'CBAMModule spatial_kernel must be a positive odd number, got {spatial_kernel}.')
        hidden = max(min_channels, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def attend(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 0)  # (2N, C): both paths through one MLP call
        logits = self.fc2(F.relu(self.fc1(pooled)))
        channel = torch.sigmoid(logits[:n] + logits[n:])  # (N, C)
        y = x * channel[:, :, None, None]
        desc = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)  # (N, 2, H, W)
        spatial = torch.sigmoid(self.spatial(desc))  # (N, 1, H, W)
        if self._recorder is not None:
            self.record_map(channel, '.channel')
            self.record_map(spatial)
        return y * spatial
