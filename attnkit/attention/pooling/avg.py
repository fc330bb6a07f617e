"""Plain 3x3 / stride-2 average pooling as a registered downsampler: the baseline the attention-guided ones
start from (``lip`` and ``guided`` equal it exactly at identity init)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...registry import POOLING
from .base import Downsampler

__all__ = ['AvgDownsample']


@POOLING.register_module('avg')
class AvgDownsample(Downsampler):
    """``F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)``: the mean of each window's valid
    positions. No parameters, records nothing.

    Args:
        channels: C (checked only).

    Shapes: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))."""
        self.check_input(x)
        return F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
