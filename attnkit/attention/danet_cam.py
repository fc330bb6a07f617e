"""DANet channel attention module (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import ATTENTION
from ._ops import sdpa
from .base import AttentionModule

__all__ = ['ChannelAttention']


@ATTENTION.register_module('danet_cam')
class ChannelAttention(AttentionModule):
    """``out = x + gamma * softmax(max(E) - E) X`` with the channel energy ``E = X X^T`` (C x C), X = x as (C, HW).

    ``softmax(max_row(E) - E) = softmax(-E)`` (a per-row constant cancels), so the attention is
    ``F.scaled_dot_product_attention(-X, X, X, scale=1)`` over a sequence of C channels (via ``_ops.sdpa``).

    Args:
        channels: C.
        identity_init: ``gamma`` starts at 0 (the paper's setting); without it ``gamma`` starts at 1.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: channel attention (N, C, C).
    """

    residual = 'add'
    paper_gamma = True

    def attend(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = x.reshape(n, 1, c, h * w)
        if self._recorder is not None:
            energy = tokens[:, 0].float() @ tokens[:, 0].float().transpose(1, 2)
            self.record_map(torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1))
        out = sdpa(-tokens, tokens, tokens, 1.0)
        return out.reshape(n, c, h, w)
