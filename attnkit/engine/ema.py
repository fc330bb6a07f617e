"""Exponential moving average of model weights, used for evaluation and saved in checkpoints."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ['ModelEMA']


class ModelEMA:
    """``ema = (1 - momentum) * ema + momentum * param`` after every optimizer update.

    Args:
        model: the (unwrapped) model to follow; it is deep-copied.
        momentum: weight of the new parameters (e.g. 0.0002 with ~90k updates, 0.001 for short runs).
        warmup: if True the momentum is ``max(momentum, 1 / (updates + 1))``, so early averages are not
            dominated by the initial weights (off by default).

    Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, warmup: bool = False) -> None:
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'EMA momentum must be in (0, 1], got {momentum}.')
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = float(momentum)
        self.warmup = bool(warmup)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self.updates += 1
        m = max(self.momentum, 1.0 / (self.updates + 1)) if self.warmup else self.momentum
        ema_params = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].lerp_(param.detach().to(ema_params[name].dtype), m)
        ema_buffers = dict(self.module.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)

    def state_dict(self) -> dict[str, Any]:
        return {'state': self.module.state_dict(), 'updates': self.updates, 'momentum': self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state['state'])
        self.updates = int(state.get('updates', 0))
