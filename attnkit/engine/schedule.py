"""Learning-rate schedule by iteration: linear warm-up, then step / cosine / poly / constant.

Example (``configs/_base_/schedules/schedule_1x.py``)::

    schedule = dict(by_epoch=True, max_epochs=12, warmup_iters=500, warmup_ratio=0.001,
                    policy='step', milestones=(8, 11), gamma=0.1)

With ``by_epoch=True`` milestones are epochs and are converted to iterations; otherwise they are iterations.
An iteration is one optimizer update (``optim.accumulate_steps`` batches).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..errors import ConfigError

__all__ = ['LRFactor', 'build_scheduler', 'total_iters', 'POLICIES']

POLICIES = ('step', 'cosine', 'poly', 'constant')


class LRFactor:
    """The learning-rate multiplier at iteration ``it`` (0-based): warm-up factor x policy factor.

    Args:
        max_iters: total iterations (cosine and poly reach ``min_lr_ratio`` there).
        policy: 'step' | 'cosine' | 'poly' | 'constant'.
        milestones: iterations where 'step' multiplies by ``gamma``.
        gamma: step factor.
        power: poly exponent.
        min_lr_ratio: final factor of cosine/poly.
        warmup_iters: length of the linear warm-up (0 = none).
        warmup_ratio: factor at iteration 0; grows linearly to 1 at ``warmup_iters``.

    A plain object of numbers, so ``LambdaLR.state_dict()`` stores it and ``weights_only`` loading works.
    """

    def __init__(self, max_iters: int, policy: str = 'step', milestones: Sequence[int] = (), gamma: float = 0.1,
                 power: float = 0.9, min_lr_ratio: float = 0.0, warmup_iters: int = 0,
                 warmup_ratio: float = 0.001) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"schedule.policy {policy!r} is not one of {', '.join(POLICIES)}.")
        self.max_iters = int(max_iters)
        self.policy = policy
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.power = float(power)
        self.min_lr_ratio = float(min_lr_ratio)
        self.warmup_iters = int(warmup_iters or 0)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, it: int) -> float:
        if self.policy == 'step':
            factor = self.gamma ** sum(1 for m in self.milestones if it >= m)
        elif self.policy == 'constant':
            factor = 1.0
        else:
            progress = min(it / max(self.max_iters, 1), 1.0)
            if self.policy == 'cosine':
                shape = 0.5 * (1.0 + math.cos(math.pi * progress))
            else:
                shape = (1.0 - progress) ** self.power
            factor = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape
        if self.warmup_iters and it < self.warmup_iters:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        return factor


def total_iters(schedule: Mapping[str, Any], iters_per_epoch: int) -> int:
    """Total training iterations: ``max_epochs * iters_per_epoch`` when ``by_epoch``, else ``max_iters``."""
    if schedule.get('by_epoch', True):
        return int(schedule.get('max_epochs', 12)) * iters_per_epoch
    if not schedule.get('max_iters'):
        raise ConfigError('schedule.by_epoch=False needs schedule.max_iters.')
    return int(schedule['max_iters'])


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Mapping[str, Any], iters_per_epoch: int) -> LambdaLR:
    """A ``LambdaLR`` stepped once per iteration, following ``schedule`` (see the module docstring).

    Args:
        optimizer: its groups' ``initial_lr`` (or ``lr``) are the base rates.
        schedule: the ``schedule`` section of the config.
        iters_per_epoch: iterations (optimizer updates) in one epoch, to convert epoch milestones.
    """
    by_epoch = schedule.get('by_epoch', True)
    scale = iters_per_epoch if by_epoch else 1
    factor = LRFactor(max_iters=total_iters(schedule, iters_per_epoch), policy=schedule.get('policy', 'step'),
                      milestones=[int(m) * scale for m in (schedule.get('milestones') or ())],
                      gamma=schedule.get('gamma', 0.1), power=schedule.get('power', 0.9),
                      min_lr_ratio=schedule.get('min_lr_ratio', 0.0), warmup_iters=schedule.get('warmup_iters', 0),
                      warmup_ratio=schedule.get('warmup_ratio', 0.001))
    return LambdaLR(optimizer, factor)
