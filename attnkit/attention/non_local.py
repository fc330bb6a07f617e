"""Non-local block, embedded-Gaussian form (Wang et al., "Non-local Neural Networks", CVPR 2018)."""
from __future__ import annotations

from torch import Tensor, nn

from ..registry import ATTENTION
from ._ops import attention_probs, from_tokens, sdpa, to_tokens
from .base import AttentionModule

__all__ = ['NonLocalBlock']


@ATTENTION.register_module('nonlocal')
class NonLocalBlock(AttentionModule):
    """``out = x + W_z(softmax(theta(x)^T phi(x) * s) g(x))`` with 1x1 convs theta, phi, g (C -> C/r) and W_z.

    Args:
        channels: C.
        reduction: inner width ``max(1, C // reduction)`` (paper: 2).
        use_scale: multiply logits by ``inner ** -0.5`` (as mmcv/timm do); ``False`` is the paper's plain
            embedded Gaussian.
        identity_init: ``out = x + gamma * W_z(...)`` with ``gamma = 0``.

    Runs through ``F.scaled_dot_product_attention`` (equal widths, O(HW) memory).
    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: (N, 1, HW, HW), or (N, 1, H, W) for a query.
    """

    residual = 'add'

    def __init__(self, channels: int, *, reduction: int = 2, use_scale: bool = True,
                 identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.inner = max(1, channels // reduction)
        self.scale = self.inner ** -0.5 if use_scale else 1.0
        self.qkv = nn.Conv2d(channels, 3 * self.inner, 1)  # theta, phi, g in one conv
        self.out = nn.Conv2d(self.inner, channels, 1)

    def attend(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        q, k, v = to_tokens(self.qkv(x)).split(self.inner, dim=-1)  # each (N, 1, HW, inner)
        if self._recorder is not None:
            self.record_map(attention_probs(q, k, self.scale, self._recorder.query_index(h, w), h, w))
        y = sdpa(q, k, v, self.scale)
        return self.out(from_tokens(y, h, w))
