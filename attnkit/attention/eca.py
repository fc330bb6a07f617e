"""Efficient channel attention (Wang et al., "ECA-Net", CVPR 2020)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from ._layout import check_layout
from .base import AttentionModule

__all__ = ['ECAModule', 'eca_kernel_size']


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """The paper's adaptive kernel size: ``t = int(|log2(C) + b| / gamma)``, made odd (``t + 1`` if even)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@ATTENTION.register_module('eca')
class ECAModule(AttentionModule):
    """Channel gate from a 1-D convolution across the pooled channel descriptor.

    Args:
        channels: C.
        kernel_size: 1-D kernel size; ``None`` derives it from C with ``gamma`` and ``b``.
        gamma, b: the paper's mapping constants (2 and 1).
        layout: ``'attnkit'`` or ``'timm'``. The parameter is the same in both (``conv.weight`` (1, 1, k), no bias,
            as ``timm.layers.EcaModule``); ``'timm'`` also applies timm's lower bound of 3 on the derived kernel
            size (it differs only below C = 8).
        identity_init: exact identity at init.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: channel weights (N, C).
    """

    def __init__(self, channels: int, *, kernel_size: int | None = None, gamma: float = 2, b: float = 1,
                 layout: str = 'attnkit', identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.layout = check_layout('ECAModule', layout)
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else kernel_size
        if kernel_size is None and layout == 'timm':
            k = max(k, 3)
        if k < 1 or k % 2 == 0:
            raise ValueError(f'ECAModule kernel_size must be a positive odd number, got {k}.')
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def attend(self, x: Tensor) -> Tensor:
        y = x.mean((2, 3)).unsqueeze(1)  # (N, 1, C)
        weights = torch.sigmoid(self.conv(y)).squeeze(1)  # (N, C)
        self.record_map(weights)
        return x * weights[:, :, None, None]

    def extra_repr(self) -> str:
        return super().extra_repr() + f', kernel_size={self.kernel_size}' + (
            ", layout='timm'" if self.layout == 'timm' else '')
