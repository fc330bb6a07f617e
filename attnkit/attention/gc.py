"""Global context block (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
Beyond", ICCVW 2019)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..registry import ATTENTION
from .base import AttentionModule

__all__ = ['GlobalContextBlock']

FUSIONS = ('add', 'scale')


@ATTENTION.register_module('gc')
class GlobalContextBlock(AttentionModule):
    """Query-independent context ``c = sum_j softmax(w^T x)_j x_j`` (one vector per image), transformed by
    ``T = Linear(C, C/r) -> LayerNorm -> ReLU -> Linear(C/r, C)`` and fused into every pixel:
    ``'scale'``: ``x * sigmoid(T_s(c))``; ``'add'``: ``x + T_a(c)`` (both: scale, then add).

    Args:
        channels: C.
        reduction, min_channels: transform width ``max(min_channels, C // reduction)`` (paper r16).
        fusion: ``'add'``, ``'scale'`` or a sequence of both.
        identity_init: exact identity at init.

    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: context weights (N, 1, H, W) (sum to 1).
    """

    def __init__(self, channels: int, *, reduction: int = 16, min_channels: int = 8,
                 fusion: str | Sequence[str] = 'add', identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        fusions = (fusion,) if isinstance(fusion, str) else tuple(fusion)
        if not fusions or any(f not in FUSIONS for f in fusions):
            raise ValueError(f"GlobalContextBlock fusion must be 'add', 'scale' or both, got {fusion!r}.")
        self.fusion = fusions
        hidden = max(min_channels, channels // reduction)
        self.context_logits = nn.Conv2d(channels, 1, 1)
        self.transform_add = self._transform(channels, hidden) if 'add' in fusions else None
        self.transform_scale = self._transform(channels, hidden) if 'scale' in fusions else None

    @staticmethod
    def _transform(channels: int, hidden: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True),
                             nn.Linear(hidden, channels))

    def attend(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        weights = torch.softmax(self.context_logits(x).reshape(n, h * w), dim=1)  # (N, HW)
        context = torch.matmul(x.flatten(2), weights.unsqueeze(2).to(x.dtype)).squeeze(2)  # (N, C)
        if self._recorder is not None:
            self.record_map(weights.reshape(n, 1, h, w))
        out = x
        if self.transform_scale is not None:
            out = out * torch.sigmoid(self.transform_scale(context))[:, :, None, None]
        if self.transform_add is not None:
            out = out + self.transform_add(context)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, fusion={self.fusion}'
