"""Local Importance-based Pooling (Gao, Wang & Wu, "LIP: Local Importance-based Pooling", ICCV 2019)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ...registry import POOLING
from .base import Downsampler, InstanceNorm, exp_weighted_pool, normalised_exp

__all__ = ['LIP']


@POOLING.register_module('lip')
class LIP(Downsampler):
    """``out = avg_pool(x * exp(G(x))) / avg_pool(exp(G(x)))``, 3x3 windows, stride 2, padding 1.

    The logit module ``G`` (``logit``) is LIP-ResNet's bottleneck form: 1x1 conv C -> hidden, instance norm,
    ReLU, 3x3 conv, instance norm, ReLU, 1x1 conv hidden -> C, instance norm, then the paper's soft gate
    ``coeff * sigmoid(.)`` (logits in (0, coeff)), one logit per channel and position.

    Args:
        channels: C.
        hidden: width of the logit module's bottleneck (default ``min(C, 128)``, LIP-ResNet's 128).
        coeff: the soft gate's scale (12, as the paper).
        identity_init: the last layer (``logit.norm3``, the affine of the last instance norm) starts at zero
            weight and bias, so the logits are uniform (``coeff / 2``) and the module is *exactly* average
            pooling over the valid positions of each window (``F.avg_pool2d(x, 3, 2, 1,
            count_include_pad=False)``); the weights are ``exp(logit - max)`` = 1. Default True (the reference
            code's ``init_layer``). False: PyTorch's default init.

    Instance norms are :class:`~attnkit.attention.pooling.base.InstanceNorm` (they take 1x1 maps).
    The weighting runs in float32 and the result is cast back to the input dtype and memory format.

    Shapes: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)); recorded map: channel mean of the importance
    ``exp(logit - max_hw logit)`` (N, 1, H, W), in (0, 1] (all ones at identity init).
    """

    def __init__(self, channels: int, *, hidden: int | None = None, coeff: float = 12.0,
                 identity_init: bool = True) -> None:
        super().__init__(channels)
        hidden = min(channels, 128) if hidden is None else hidden
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f'LIP hidden must be a positive integer, got {hidden!r}.')
        self.coeff = float(coeff)
        self.identity_init = bool(identity_init)
        self.logit = nn.Sequential(OrderedDict([
            ('conv1', nn.Conv2d(channels, hidden, 1, bias=False)), ('norm1', InstanceNorm(hidden)),
            ('relu1', nn.ReLU(inplace=True)),
            ('conv2', nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)), ('norm2', InstanceNorm(hidden)),
            ('relu2', nn.ReLU(inplace=True)),
            ('conv3', nn.Conv2d(hidden, channels, 1, bias=False)), ('norm3', InstanceNorm(channels)),
        ]))
        if identity_init:
            nn.init.zeros_(self.logit.norm3.weight)
            nn.init.zeros_(self.logit.norm3.bias)

    def logits(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W) logits in (0, coeff)."""
        return self.coeff * torch.sigmoid(self.logit(x))

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)), x's dtype and memory format."""
        self.check_input(x)
        weight = normalised_exp(self.logits(x))
        if self.recording:
            self.record_map(weight.mean(1, keepdim=True))
        return exp_weighted_pool(x, weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, coeff={self.coeff}, identity_init={self.identity_init}'
