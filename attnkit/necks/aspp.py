"""ASPP neck (atrous spatial pyramid pooling; DeepLabV3 / V3+, Chen et al. 2017/2018).

Parallel branches on the deepest feature: image pooling, a 1×1 conv and 3×3 convs at several dilation
rates (depthwise-separable for DeepLabV3+), concatenated and fused by a 3×3 conv. As a neck it returns the
input tuple with that feature replaced by the ASPP output, so a decoder can still read the low-level
features (DeepLabV3+ reads layer1).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import NECKS

__all__ = ['ASPP']


def _conv_bn_relu(c_in: int, c_out: int, k: int, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=dilation * (k - 1) // 2, dilation=dilation,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class _ImagePool(nn.Module):
    """Global average pool → 1×1 conv-BN-ReLU → broadcast back to the map size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


@NECKS.register_module()
class ASPP(nn.Module):
    """Atrous spatial pyramid pooling on one feature of the backbone's tuple.

    Args:
        in_channels: channels of every input feature (the backbone's ``out_channels``).
        out_channels: channels of the ASPP output (and of each branch).
        in_index: the feature ASPP runs on (default the deepest).
        dilations: rates; 1 gives the 1×1 branch (output stride 8: (1, 12, 24, 36); 16: (1, 6, 12, 18)).
        separable: depthwise-separable 3×3 branches (DeepLabV3+).
        dropout: dropout on the fused output.
        in_strides: the input features' strides (e.g. ``backbone.strides``); ``self.strides`` is then the same.

    Shapes:
        feats: tuple of (N, C_i, H_i, W_i) -> the same tuple with ``feats[in_index]`` replaced by
        (N, out_channels, H_i, W_i).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 512, in_index: int = -1,
                 dilations: Sequence[int] = (1, 12, 24, 36), separable: bool = True, dropout: float = 0.0,
                 in_strides: Sequence[int] | None = None) -> None:
        super().__init__()
        if isinstance(in_channels, int):
            in_channels = [in_channels]
        self.in_index = in_index
        c_in = list(in_channels)[in_index]
        branches: list[nn.Module] = [_ImagePool(c_in, out_channels)]
        for rate in dilations:
            if rate == 1:
                branches.append(_conv_bn_relu(c_in, out_channels, 1))
            elif separable:
                branches.append(nn.Sequential(_conv_bn_relu(c_in, c_in, 3, rate, groups=c_in),
                                              _conv_bn_relu(c_in, out_channels, 1)))
            else:
                branches.append(_conv_bn_relu(c_in, out_channels, 3, rate))
        self.branches = nn.ModuleList(branches)
        self.bottleneck = _conv_bn_relu(out_channels * len(branches), out_channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        chans = list(in_channels)
        chans[in_index] = out_channels
        self.out_channels = tuple(chans)
        self.strides = tuple(in_strides) if in_strides is not None else None

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        feats = list(feats)
        x = feats[self.in_index]
        out = self.bottleneck(torch.cat([b(x) for b in self.branches], dim=1))
        feats[self.in_index] = self.dropout(out)
        return tuple(feats)
