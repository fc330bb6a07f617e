"""Semantic FPN head (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019), on an FPN neck.

Each pyramid level goes through conv-BN-ReLU + 2× upsampling steps until it reaches the finest level's
resolution; the levels are summed and classified.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ...registry import HEADS
from .base import BaseDecodeHead, ConvBNReLU, resize

__all__ = ['SemanticFPNHead']


@HEADS.register_module('semantic_fpn')
class SemanticFPNHead(BaseDecodeHead):
    """Args:
        in_channels: the FPN's out channels per level (or one int for all).
        channels: width of the scale heads (128 in the paper).
        num_classes: K.
        in_index: the levels used (default the first four, strides 4..32).
        feature_strides: stride of each used level.

    Shapes:
        feats: levels (N, C_l, H/s_l, W/s_l) -> ``{'seg': (N, K, H/s_0, W/s_0)}``.
    """

    def __init__(self, in_channels: int | Sequence[int], channels: int, num_classes: int,
                 in_index: Sequence[int] = (0, 1, 2, 3), feature_strides: Sequence[int] = (4, 8, 16, 32),
                 **kwargs: Any) -> None:
        in_index = list(in_index)
        if isinstance(in_channels, int):
            in_channels = [in_channels] * (max(in_index) + 1)
        super().__init__(in_channels, channels, num_classes, in_index=in_index, **kwargs)
        if len(feature_strides) != len(in_index):
            raise ValueError(f"SemanticFPNHead: {len(feature_strides)} feature_strides for {len(in_index)} levels.")
        if list(feature_strides) != sorted(feature_strides):
            raise ValueError(f"SemanticFPNHead: feature_strides must increase, got {feature_strides}.")
        self.feature_strides = list(feature_strides)
        self.scale_heads = nn.ModuleList()
        for c_in, stride in zip(self.in_channels, feature_strides):
            steps = max(1, int(round(math.log2(stride / feature_strides[0]))))
            layers: list[nn.Module] = []
            for k in range(steps):
                layers.append(ConvBNReLU(c_in if k == 0 else channels, channels, 3, norm=self.norm))
                if stride != feature_strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=self.align_corners))
            self.scale_heads.append(nn.Sequential(*layers))

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        xs = self.select(feats)
        out = self.scale_heads[0](xs[0])
        for head, x in zip(self.scale_heads[1:], xs[1:]):
            out = out + resize(head(x), out.shape[-2:], self.align_corners)
        return {'seg': self.cls_seg(out)}
