"""Multi-head cross-attention of a few query tokens over a token sequence, shared by the attention heads."""
from __future__ import annotations

import torch
from torch import Tensor

from ...attention._ops import sdpa

__all__ = ['split_heads', 'cross_attend', 'query_logits', 'query_probs']


def split_heads(t: Tensor, heads: int) -> Tensor:
    """(N, L, heads*d) -> (N, heads, L, d)."""
    n, length, c = t.shape
    return t.reshape(n, length, heads, c // heads).transpose(1, 2)


def cross_attend(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v`` per head through ``F.scaled_dot_product_attention``.

    Args: q (N, Lq, heads*d); k, v (N, L, heads*d). Returns (N, Lq, heads*d).
    """
    q, k, v = (split_heads(t, heads) for t in (q, k, v))
    out = sdpa(q, k, v, q.shape[-1] ** -0.5)  # (N, heads, Lq, d)
    return out.transpose(1, 2).flatten(2)


def query_logits(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """The scaled logits ``q k^T / sqrt(d)`` of :func:`cross_attend`, in float32 (for recording only).

    Args: q (N, Lq, heads*d); k (N, L, heads*d). Returns (N, heads, Lq, L).
    """
    q, k = split_heads(q.float(), heads), split_heads(k.float(), heads)
    return q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5


def query_probs(q: Tensor, k: Tensor, heads: int) -> Tensor:
    """The attention weights :func:`cross_attend` applies, computed again in float32 (for recording only).

    Args: q (N, Lq, heads*d); k (N, L, heads*d). Returns (N, heads, Lq, L), rows summing to 1.
    """
    return torch.softmax(query_logits(q, k, heads), dim=-1)
