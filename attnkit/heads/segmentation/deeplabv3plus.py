"""DeepLabV3+ decoder (Chen et al., ECCV 2018), after the :class:`~attnkit.necks.ASPP` neck.

The ASPP neck replaces the deepest feature with its multi-rate context; this head upsamples it to the
low-level (layer1, stride 4) feature, concatenates a 1×1-reduced copy of that feature, refines with two
depthwise-separable 3×3 convs and classifies.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ...registry import HEADS
from .base import BaseDecodeHead, ConvBNReLU, resize

__all__ = ['DeepLabV3PlusHead', 'SeparableConv']


class SeparableConv(nn.Sequential):
    """Depthwise 3×3 conv-BN-ReLU then pointwise 1×1 conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1, norm: str | None = 'BN') -> None:
        super().__init__(ConvBNReLU(in_channels, in_channels, 3, dilation, groups=in_channels, norm=norm),
                         ConvBNReLU(in_channels, out_channels, 1, norm=norm))


@HEADS.register_module('deeplabv3plus')
class DeepLabV3PlusHead(BaseDecodeHead):
    """Args:
        in_channels: channels of every input feature (ASPP neck ``out_channels``).
        channels: decoder width (512).
        num_classes: K.
        in_index: the ASPP output (default the last feature).
        c1_index: the low-level feature (default 0 = layer1).
        c1_channels: width the low-level feature is reduced to (48).

    Shapes:
        feats[in_index]: (N, C, H/8, W/8), feats[c1_index]: (N, C1, H/4, W/4) -> ``{'seg': (N, K, H/4, W/4)}``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int, in_index: int = -1,
                 c1_index: int = 0, c1_channels: int = 48, **kwargs: Any) -> None:
        if isinstance(in_channels, int):
            raise ValueError("DeepLabV3PlusHead needs the channels of every input feature (a list).")
        super().__init__(in_channels, channels, num_classes, in_index=in_index, **kwargs)
        self.c1_index = c1_index
        c1_in = list(in_channels)[c1_index]
        self.c1_bottleneck = ConvBNReLU(c1_in, c1_channels, 1, norm=self.norm)
        self.project = (ConvBNReLU(self.in_channels, channels, 1, norm=self.norm)
                        if self.in_channels != channels else nn.Identity())
        self.sep_bottleneck = nn.Sequential(SeparableConv(channels + c1_channels, channels, norm=self.norm),
                                            SeparableConv(channels, channels, norm=self.norm))

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.project(self.select(feats))
        c1 = self.c1_bottleneck(feats[self.c1_index])
        x = resize(x, c1.shape[-2:], self.align_corners)
        out = self.sep_bottleneck(torch.cat([x, c1], dim=1))
        return {'seg': self.cls_seg(out)}
