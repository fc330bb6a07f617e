"""FCN head (Long et al., 2015; the mmseg "FCNHead" form): a stack of 3×3 convs, optional input shortcut."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ...registry import HEADS
from .base import BaseDecodeHead, ConvBNReLU

__all__ = ['FCNHead']


@HEADS.register_module('fcn')
class FCNHead(BaseDecodeHead):
    """``num_convs`` conv-BN-ReLU layers on one feature, then a 1×1 classifier.

    Also serves as the auxiliary head on layer3 (``in_index=2, num_convs=1, concat_input=False,
    loss_weight=0.4, loss_name='loss_aux'``).

    Args:
        in_channels, channels, num_classes, in_index, ...: see :class:`BaseDecodeHead`.
        num_convs: conv layers (0 = classifier straight on the input; then ``channels`` must equal the input).
        kernel_size: conv kernel.
        dilation: conv dilation.
        concat_input: concatenate the input with the conv output and fuse with one more conv.

    Shapes:
        feats[in_index]: (N, C_in, h, w) -> ``{'seg': (N, K, h, w)}``.
    """

    def __init__(self, in_channels: int | Sequence[int], channels: int, num_classes: int, num_convs: int = 2,
                 kernel_size: int = 3, dilation: int = 1, concat_input: bool = True, **kwargs: Any) -> None:
        super().__init__(in_channels, channels, num_classes, **kwargs)
        c_in = self.in_channels
        if not isinstance(c_in, int):
            raise ValueError("FCNHead reads one feature: in_index must be an int.")
        if num_convs == 0 and c_in != channels:
            raise ValueError(f"FCNHead with num_convs=0 needs channels == in_channels ({c_in}), got {channels}.")
        self.convs = nn.Sequential(*[ConvBNReLU(c_in if i == 0 else channels, channels, kernel_size, dilation,
                                                norm=self.norm) for i in range(num_convs)])
        self.concat_input = concat_input
        if concat_input:
            self.conv_cat = ConvBNReLU(c_in + channels, channels, kernel_size, norm=self.norm)

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.select(feats)
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return {'seg': self.cls_seg(out)}
