"""BoTNet multi-head self-attention with 2-D relative position logits (Srinivas et al., "Bottleneck
Transformers for Visual Recognition", CVPR 2021)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import ATTENTION
from ._ops import attention_probs, from_tokens, sdpa, to_tokens
from .base import AttentionModule

__all__ = ['MHSA']


@ATTENTION.register_module('mhsa')
class MHSA(AttentionModule):
    """Multi-head self-attention over all pixels, replacing the 3x3 conv of a ResNet bottleneck.

    Logits of query i and key j (head width d, ``s = d ** -0.5``, as BoTNet scales q first):
    ``s * (q_i . k_j + q_i . r_h[y_j - y_i] + q_i . r_w[x_j - x_i])``. The relative tables hold offsets
    ``-(max_size - 1) .. max_size - 1``, so any input up to ``max_size`` x ``max_size`` works. The relative
    logits ride inside the dot product (q gets its H row- and W column-offset logits appended, k the
    one-hot codes of its row and column; v is zero-padded to the same width d + H + W), so
    ``F.scaled_dot_product_attention`` keeps the O(HW)-memory flash kernel.

    Args:
        channels: C in = out (divisible by ``heads``).
        heads: number of heads (4).
        max_size: the largest H and W supported (64); a larger input raises ValueError.
        stride: 1, or 2 to average-pool 2x2 after attention (BoTNet's stride-2 block); the output is
            ``ceil(H/2) x ceil(W/2)`` like the stride-2 3x3 conv it replaces.
        qkv_bias: bias in the q/k/v projection.
        identity_init: ``out = x + gamma * (mhsa(x) - x)`` with ``gamma = 0`` (with ``stride=2`` the
            identity is the 2x2 average pool of x).

    Shapes: x (N, C, H, W) -> (N, C, H/stride, W/stride); recorded map: (N, heads, HW, HW), or
    (N, heads, H, W) for a query (at the input resolution).
    """

    def __init__(self, channels: int, *, heads: int = 4, max_size: int = 64, stride: int = 1,
                 qkv_bias: bool = False, identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        if heads < 1 or channels % heads:
            raise ValueError(f'MHSA needs channels divisible by heads, got channels={channels}, heads={heads}.')
        if stride not in (1, 2):
            raise ValueError(f'MHSA stride must be 1 or 2, got {stride}.')
        if max_size < 1:
            raise ValueError(f'MHSA max_size must be positive, got {max_size}.')
        self.heads, self.head_dim, self.max_size, self.stride = heads, channels // heads, max_size, stride
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        # named 'pos_*' so that the default optimiser config puts them in the no-weight-decay group
        self.pos_rel_h = nn.Parameter(torch.randn(2 * max_size - 1, self.head_dim) * self.scale)
        self.pos_rel_w = nn.Parameter(torch.randn(2 * max_size - 1, self.head_dim) * self.scale)

    def _relative_table(self, table: Tensor, size: int) -> Tensor:
        """(size, size, d): entry [i, j] = table[j - i + max_size - 1]."""
        idx = torch.arange(size, device=table.device)
        return table[idx[None, :] - idx[:, None] + self.max_size - 1]

    def augmented_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q', k', v' of width d + H + W with ``q'_i . k'_j = q_i . k_j + rel_h + rel_w`` exactly."""
        n, _, h, w = x.shape
        if h > self.max_size or w > self.max_size:
            raise ValueError(f'MHSA was built with max_size={self.max_size}; input {h}x{w} is larger. '
                             f'Build it with max_size >= {max(h, w)}.')
        q, k, v = to_tokens(self.qkv(x), 3 * self.heads).split(self.heads, dim=1)  # (N, heads, HW, d)
        grid = q.reshape(n, self.heads, h, w, self.head_dim)
        rel_h = torch.einsum('nhyxd,yjd->nhyxj', grid, self._relative_table(self.pos_rel_h, h).to(q.dtype))
        rel_w = torch.einsum('nhyxd,xjd->nhyxj', grid, self._relative_table(self.pos_rel_w, w).to(q.dtype))
        q = torch.cat([q, rel_h.reshape(n, self.heads, h * w, h), rel_w.reshape(n, self.heads, h * w, w)], -1)
        rows = torch.eye(h, dtype=k.dtype, device=k.device)[:, None, :].expand(h, w, h).reshape(h * w, h)
        cols = torch.eye(w, dtype=k.dtype, device=k.device)[None, :, :].expand(h, w, w).reshape(h * w, w)
        codes = torch.cat([rows, cols], -1).expand(n, self.heads, h * w, h + w)
        k = torch.cat([k, codes], -1)
        return q, k, v

    def attend(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        q, k, v = self.augmented_qkv(x)
        if self._recorder is not None:
            self.record_map(attention_probs(q, k, self.scale, self._recorder.query_index(h, w), h, w))
        out = from_tokens(sdpa(q, k, v, self.scale), h, w)
        return self.shortcut(out)

    def shortcut(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2, 2, ceil_mode=True) if self.stride == 2 else x

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, heads={self.heads}, max_size={self.max_size}, stride={self.stride}'
