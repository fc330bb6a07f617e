"""Convolutional block attention module (Woo et al., "CBAM", ECCV 2018): channel gate, then spatial gate."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from ._layout import check_layout, hidden_width
from .base import AttentionModule
from .se import linear

__all__ = ['CBAMModule']


@ATTENTION.register_module('cbam')
class CBAMModule(AttentionModule):
    """``y = x * Mc(x)``, ``out = y * Ms(y)``.

    ``Mc = sigmoid(MLP(avgpool x) + MLP(maxpool x))`` (shared MLP); ``Ms = sigmoid(conv7x7([mean_c y; max_c y]))``.

    Args:
        channels: C.
        reduction, min_channels: MLP hidden width ``max(min_channels, C // reduction)`` (see ``divisor``).
        spatial_kernel: odd kernel size of the spatial conv (7).
        layout: ``'attnkit'``: MLP ``fc1``/``fc2`` are ``nn.Linear`` with bias, the spatial conv ``spatial`` has a
            bias and no BatchNorm (BatchNorm of a one-channel map fails on 1x1 inputs of batch 1 in training).
            ``'timm'``: the parameters of ``timm.layers.CbamModule``: ``channel.fc1``/``channel.fc2`` 1x1 convs
            without bias, ``spatial.conv.conv`` (no bias) followed by the BatchNorm ``spatial.conv.bn``.
        divisor: when set, the hidden width is timm's ``make_divisible(C / reduction, divisor)`` (``min_channels``
            unused). Default: None for ``'attnkit'``, 1 for ``'timm'`` (timm's ``rd_divisor=1``).
        identity_init: exact identity at init.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded maps: spatial (N, 1, H, W) under the module
    name, channel weights (N, C) under ``name + '.channel'``.
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_channels: int = 8, spatial_kernel: int = 7,
                 layout: str = 'attnkit', divisor: int | None = None, identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise ValueError(f'CBAMModule spatial_kernel must be a positive odd number, got {spatial_kernel}.')
        self.layout = check_layout('CBAMModule', layout)
        if divisor is None and layout == 'timm':
            divisor = 1
        hidden = hidden_width(channels, reduction, min_channels, divisor)
        pad = spatial_kernel // 2
        if layout == 'timm':
            self.channel = nn.ModuleDict({'fc1': nn.Conv2d(channels, hidden, 1, bias=False),
                                          'fc2': nn.Conv2d(hidden, channels, 1, bias=False)})
            conv = nn.ModuleDict({'conv': nn.Conv2d(2, 1, spatial_kernel, padding=pad, bias=False),
                                  'bn': nn.BatchNorm2d(1)})
            self.spatial: nn.Module = nn.ModuleDict({'conv': conv})
        else:
            self.fc1 = nn.Linear(channels, hidden)
            self.fc2 = nn.Linear(hidden, channels)
            self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=pad)

    def _mlp(self) -> tuple[nn.Module, nn.Module]:
        """The shared MLP's two layers (``fc1``, ``fc2``) in either layout."""
        if self.layout == 'timm':
            return self.channel['fc1'], self.channel['fc2']
        return self.fc1, self.fc2

    def _spatial_logits(self, desc: Tensor) -> Tensor:
        """(N, 2, H, W) descriptor -> (N, 1, H, W) logits (conv, plus BatchNorm in the timm layout)."""
        if self.layout == 'timm':
            conv = self.spatial['conv']
            return conv['bn'](conv['conv'](desc))
        return self.spatial(desc)

    def attend(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        fc1, fc2 = self._mlp()
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 0)  # (2N, C): both paths through one MLP call
        logits = linear(fc2, F.relu(linear(fc1, pooled)))
        channel = torch.sigmoid(logits[:n] + logits[n:])  # (N, C)
        y = x * channel[:, :, None, None]
        desc = torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)  # (N, 2, H, W)
        spatial = torch.sigmoid(self._spatial_logits(desc))  # (N, 1, H, W)
        if self._recorder is not None:
            self.record_map(channel, '.channel')
            self.record_map(spatial)
        return y * spatial

    def extra_repr(self) -> str:
        return super().extra_repr() + (", layout='timm'" if self.layout == 'timm' else '')
