"""SimAM (Yang et al., "SimAM: A Simple, Parameter-Free Attention Module", ICML 2021)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import ATTENTION
from .base import AttentionModule

__all__ = ['SimAM']


@ATTENTION.register_module('simam')
class SimAM(AttentionModule):
    """Parameter-free 3-D gate from the energy function:
    ``d = (x - mu)^2``, ``v = sum(d) / (HW - 1)``, ``out = x * sigmoid(d / (4 (v + lambda)) + 1/2)``.

    Args:
        channels: C (checked only; no parameters).
        e_lambda: the regulariser lambda (1e-4).
        identity_init: exact identity at init (adds the only parameter, gamma).

    A 1x1 map has no spread: ``HW - 1`` is clamped to 1, so the gate is ``sigmoid(1/2)``.
    Shapes: x (N, C, H, W) -> (N, C, H, W); recorded map: channel mean of the gate (N, 1, H, W).
    """

    def __init__(self, channels: int, *, e_lambda: float = 1e-4, identity_init: bool = False) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.e_lambda = e_lambda

    def attend(self, x: Tensor) -> Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean((2, 3), keepdim=True)).square()
        v = d.sum((2, 3), keepdim=True) / n
        gate = torch.sigmoid(d / (4 * (v + self.e_lambda)) + 0.5)
        if self._recorder is not None:
            self.record_map(gate.mean(1, keepdim=True))
        return x * gate

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, e_lambda={self.e_lambda}'
