"""SoftPool (Stergiou, Poppe & Kalliatakis, "Refining activation downsampling with SoftPool", ICCV 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...registry import POOLING
from .base import Downsampler, exp_weighted_pool, normalised_exp

__all__ = ['SoftPool']


@POOLING.register_module('softpool')
class SoftPool(Downsampler):
    """``out_c(R) = sum_{i in R} softmax_R(x_c)_i * x_{c,i}``: each channel's exp(x)-weighted average over a
    2x2 window R (stride 2; the last window of an odd side is the one row/column left). No parameters.

    Numerically stable: each window's maximum is subtracted before ``exp`` (windows do not overlap, so the
    per-window maximum is one max-pool, broadcast back), so no weight exceeds 1 and every window has a
    weight of exactly 1: no overflow, no 0/0, whatever the activations' range. Float32 inside, the result
    is cast back to the input's dtype.

    Args:
        channels: C (checked only).

    Shapes: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)); recorded map: channel mean of the importance
    ``exp(x - max_hw x)`` (N, 1, H, W), in (0, 1].
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)), x's dtype and memory format."""
        self.check_input(x)
        h, w = x.shape[2:]
        xf = x.float()
        peak = F.max_pool2d(xf.detach(), 2, 2, ceil_mode=True)  # (N, C, ceil(H/2), ceil(W/2))
        peak = peak.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, :h, :w]
        weight = torch.exp(xf - peak)
        if self.recording:
            self.record_map(normalised_exp(x).mean(1, keepdim=True))
        return exp_weighted_pool(xf, weight, kernel_size=2, stride=2, padding=0, ceil_mode=True).to(x.dtype)
