"""CCNet head (Huang et al., ICCV 2019): recurrent criss-cross attention (R = 2) between two convs.

The criss-cross module comes from :mod:`attnkit.attention` (``criss_cross``); one module with shared weights
is applied ``recurrence`` times, so every pixel gathers context from the whole image in two steps.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ...builder import build_attention
from ...registry import HEADS
from .fcn import FCNHead

__all__ = ['CCHead']


@HEADS.register_module('ccnet')
class CCHead(FCNHead):
    """FCN head with recurrent criss-cross attention after its first conv.

    Args:
        in_channels, channels, num_classes, ...: see :class:`FCNHead` (``num_convs`` is 2).
        attention: criss-cross config, built on ``channels``.
        recurrence: times the (shared) attention module is applied (R).
        identity_init: start the attention as the identity (γ = 0).

    Shapes:
        feats[in_index]: (N, C_in, h, w) -> ``{'seg': (N, K, h, w)}``.
    """

    def __init__(self, in_channels: int | Sequence[int], channels: int, num_classes: int,
                 attention: Mapping[str, Any] | str = 'criss_cross', recurrence: int = 2,
                 identity_init: bool = True, **kwargs: Any) -> None:
        if kwargs.pop('num_convs', 2) != 2:
            raise ValueError("CCHead has exactly 2 convs (before and after the attention).")
        super().__init__(in_channels, channels, num_classes, num_convs=2, **kwargs)
        if recurrence < 1:
            raise ValueError(f"CCHead: recurrence must be >= 1, got {recurrence}.")
        self.recurrence = recurrence
        self.cca = build_attention(attention, channels, identity_init=identity_init)

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.select(feats)
        out = self.convs[0](x)
        for _ in range(self.recurrence):
            out = self.cca(out)
        out = self.convs[1](out)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return {'seg': self.cls_seg(out)}
