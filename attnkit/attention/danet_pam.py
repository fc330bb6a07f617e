"""DANet position attention module (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019)."""
from __future__ import annotations

from torch import Tensor, nn

from ..registry import ATTENTION
from ._ops import attention_probs, from_tokens, sdpa, to_tokens
from .base import AttentionModule

__all__ = ['PositionAttention']


@ATTENTION.register_module('danet_pam')
class PositionAttention(AttentionModule):
    """``out = x + gamma * V softmax(Q^T K)^T``: q/k 1x1 convs C -> C/8, v 1x1 conv C -> C, no logit scaling.

    q and k are zero-padded to v's width inside ``sdpa`` so the CPU flash kernel keeps O(HW) memory.

    Args:
        channels: C.
        reduction: q/k width ``max(1, C // reduction)`` (8).
        identity_init: ``gamma`` starts at 0 (the paper's setting); without it ``gamma`` starts at 1.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: (N, 1, HW, HW), or (N, 1, H, W) for a query.
    """

    residual = 'add'
    paper_gamma = True

    def __init__(self, channels: int, *, reduction: int = 8, identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.key_channels = max(1, channels // reduction)
        self.qkv = nn.Conv2d(channels, 2 * self.key_channels + channels, 1)  # query, key, value in one conv

    def attend(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        q, k, v = to_tokens(self.qkv(x)).split([self.key_channels, self.key_channels, self.channels], dim=-1)
        if self._recorder is not None:
            self.record_map(attention_probs(q, k, 1.0, self._recorder.query_index(h, w), h, w))
        return from_tokens(sdpa(q, k, v, 1.0), h, w)
