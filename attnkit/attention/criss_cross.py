"""Criss-cross attention (Huang et al., "CCNet: Criss-Cross Attention for Semantic Segmentation", ICCV 2019)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import ATTENTION
from .base import AttentionModule

__all__ = ['CrissCrossAttention']


@ATTENTION.register_module('criss_cross')
class CrissCrossAttention(AttentionModule):
    """Each pixel attends to the H + W - 1 pixels of its column and row (the centre counted once):
    ``out = x + gamma * sum_j softmax_j(q_i . k_j) v_j`` over the cross, q/k 1x1 convs C -> C/8, v C -> C,
    no logit scaling. CCNet applies it R = 2 times (recurrent, shared weights) to reach every pixel;
    that loop belongs to the head.

    The row logits (N, H, W, W) and column logits (N, H, W, H) (centre masked out of the column) share
    one softmax over their concatenation, as in CCNet's own kernel: memory O(HW (H + W)), never HW x HW.
    A joint softmax over two key sets cannot be expressed with ``F.scaled_dot_product_attention``
    without an HW x HW mask, so this module uses batched matmuls.

    Args:
        channels: C.
        reduction: q/k width ``max(1, C // reduction)`` (8).
        identity_init: ``gamma`` starts at 0 (the paper's setting); without it ``gamma`` starts at 1.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: (N, 1, HW, HW) (zero outside the cross), or
    (N, 1, H, W) for a query.
    """

    residual = 'add'
    paper_gamma = True

    def __init__(self, channels: int, *, reduction: int = 8, identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.key_channels = max(1, channels // reduction)
        self.qkv = nn.Conv2d(channels, 2 * self.key_channels + channels, 1)

    def attend(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        qkv = self.qkv(x).permute(0, 2, 3, 1)  # (N, H, W, 2r + C), a view for channels_last input
        q, k, v = qkv.split([self.key_channels, self.key_channels, self.channels], dim=-1)
        row = q @ k.transpose(-1, -2)  # (N, H, W, W): [n, y, x, x'] = q(y, x) . k(y, x')
        qc, kc, vc = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (N, W, H, .)
        col = qc @ kc.transpose(-1, -2)  # (N, W, H, H): [n, x, y, y'] = q(y, x) . k(y', x)
        centre = torch.eye(h, dtype=torch.bool, device=x.device)
        col = col.masked_fill(centre, float('-inf'))
        probs = torch.softmax(torch.cat([col.transpose(1, 2), row], -1), dim=-1)  # (N, H, W, H + W)
        p_col, p_row = probs.split([h, w], dim=-1)
        if self._recorder is not None:
            self._record(p_col, p_row)
        out = p_row @ v + (p_col.transpose(1, 2) @ vc).transpose(1, 2)  # (N, H, W, C)
        return out.permute(0, 3, 1, 2)

    def _record(self, p_col: Tensor, p_row: Tensor) -> None:
        """Scatter the cross weights into (N, 1, HW, HW) or, for a query, (N, 1, H, W)."""
        n, h, w, _ = p_row.shape
        index = self._recorder.query_index(h, w)
        if index is not None:
            y, x = divmod(index, w)
            out = p_row.new_zeros(n, h, w)
            out[:, :, x] = p_col[:, y, x]
            out[:, y, :] += p_row[:, y, x]
            self.record_map(out[:, None])
            return
        full = p_row.new_zeros(n, h, w, h, w)
        ys, xs = torch.arange(h), torch.arange(w)
        full[:, ys[:, None, None], xs[None, :, None], ys[:, None, None], xs[None, None, :]] = p_row
        full[:, ys[:, None, None], xs[None, :, None], ys[None, None, :], xs[None, :, None]] += p_col
        self.record_map(full.reshape(n, 1, h * w, h * w))
