"""What every downsampler shares: the (channels, *, ...) contract, input checks, the exp-weighted window average.

A downsampler maps (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)) (any H, W >= 1, 1x1 included) and, inside
``attnkit.attention.record(model)``, stores its importance map (N, 1, H, W) at the input resolution under
its module name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..record import Recordable

__all__ = ['Downsampler', 'exp_weighted_pool', 'normalised_exp', 'InstanceNorm']


def normalised_exp(logits: Tensor) -> Tensor:
    """``exp(logits - max_hw logits)`` per map: (N, K, H, W) -> (N, K, H, W) in (0, 1], float32.

    Subtracting a per-map constant leaves every window's weighted average unchanged (it cancels in the
    ratio) and keeps ``exp`` from overflowing; uniform logits give weights of exactly 1.
    """
    logits = logits.float()
    return torch.exp(logits - logits.detach().amax((2, 3), keepdim=True))


def exp_weighted_pool(x: Tensor, weight: Tensor, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                      ceil_mode: bool = False) -> Tensor:
    """``sum_window(weight * x) / sum_window(weight)`` over every pooling window (padding excluded).

    Args:
        x: (N, C, H, W) values.
        weight: (N, C, H, W) or (N, 1, H, W) non-negative weights (shared by the channels when 1).
        kernel_size, stride, padding, ceil_mode: the windows, as ``F.avg_pool2d``.

    Returns:
        (N, C, H', W') in float32 (the caller casts back). With all weights equal to 1 this is exactly
        ``F.avg_pool2d(x, ..., count_include_pad=False)`` (the same window sums, divided by the window's
        count of valid positions).
    """
    x = x.float()
    weight = weight.float()
    args = dict(kernel_size=kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode, divisor_override=1)
    num = F.avg_pool2d(x * weight, **args)
    den = F.avg_pool2d(weight, **args)
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d(channels, affine=True)`` that also takes a 1x1 map in training (PyTorch refuses it):
    a single position normalises to 0, so the output is the bias. Keys: ``weight``, ``bias``."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] * x.shape[3] == 1:
            return (x * 0 + self.bias.to(x.dtype).view(1, -1, 1, 1))
        return super().forward(x)


class Downsampler(Recordable, nn.Module):
    """Base of the registered downsamplers (``attnkit.registry.POOLING``).

    Args:
        channels: C of the input (= output).

    Subclasses implement ``forward``; :meth:`check_input` gives the one-line errors.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f'{type(self).__name__} needs a positive integer channel count, got {channels!r}.')
        self.channels = channels

    def check_input(self, x: Tensor) -> None:
        """ValueError unless ``x`` is (N, channels, H, W) with H, W >= 1."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f'{type(self).__name__} expects input (N, {self.channels}, H, W), got {shape}.')
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f'{type(self).__name__} needs a map of at least 1x1, got {tuple(x.shape)}.')

    @staticmethod
    def output_size(height: int, width: int) -> tuple[int, int]:
        """(ceil(H/2), ceil(W/2))."""
        return -(-height // 2), -(-width // 2)

    def extra_repr(self) -> str:
        return f'channels={self.channels}'
