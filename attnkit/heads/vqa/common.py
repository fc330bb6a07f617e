"""Pieces shared by the VQA fusion heads: grid flattening, 2-D sine positions, masked pooling."""
from __future__ import annotations

import math

import torch

__all__ = ['grid_tokens', 'sine_positions', 'masked_mean']


def grid_tokens(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) feature map (any memory format) -> (N, H*W, C) tokens, row-major over the grid."""
    return x.flatten(2).transpose(1, 2)


def sine_positions(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2-D sine/cosine position codes (H*W, dim): half the channels encode y, half x (DETR style)."""
    if dim % 4:
        raise ValueError(f'sine_positions: dim must be a multiple of 4, got {dim}.')
    quarter = dim // 4
    freq = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(10000.0) / quarter))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = ys[:, None] * freq[None]  # (H, q)
    px = xs[:, None] * freq[None]  # (W, q)
    py = torch.cat([py.sin(), py.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    px = torch.cat([px.sin(), px.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    return torch.cat([py, px], -1).reshape(h * w, dim).to(dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (N, L, D) tokens over the positions where ``mask`` (N, L) is true -> (N, D)."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
