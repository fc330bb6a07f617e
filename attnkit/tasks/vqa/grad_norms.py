"""Gradient norms per backbone stage: how much of the loss's gradient reaches each part of the image side.

A diagnostic (docs/bench/vqa.md, "From scratch"): call after ``loss.backward()`` and before the optimizer step.
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

__all__ = ['stage_grad_norms', 'DEFAULT_STAGES']

# ResNet names (attnkit.backbones.resnet): stem = conv1 + bn1, then layer1..layer4
DEFAULT_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ('stem', ('backbone.conv1', 'backbone.bn1', 'backbone.stem')),
    ('layer1', ('backbone.layer1',)), ('layer2', ('backbone.layer2',)),
    ('layer3', ('backbone.layer3',)), ('layer4', ('backbone.layer4',)),
    ('question_encoder', ('question_encoder',)), ('head', ('head',)))


def stage_grad_norms(model: nn.Module, stages: Sequence[tuple[str, Sequence[str]]] = DEFAULT_STAGES,
                     relative: bool = False) -> dict[str, float]:
    """L2 norm of the gradients of each stage's parameters.

    Args:
        model: a model after ``backward()``.
        stages: ``(name, parameter-name prefixes)`` pairs; a parameter belongs to the first stage one of whose
            prefixes it starts with (a prefix matches whole dot-separated segments). Stages with no parameter
            are left out.
        relative: divide each norm by the L2 norm of the stage's weights (the size of an update relative to
            the weights it changes, which is what decides whether a stage learns).

    Returns:
        ``{stage: norm}`` (0.0 for a stage whose parameters got no gradient).
    """
    sums: dict[str, list[float]] = {}
    for pname, p in model.named_parameters():
        for stage, prefixes in stages:
            if any(pname == pre or pname.startswith(pre + '.') for pre in prefixes):
                acc = sums.setdefault(stage, [0.0, 0.0])
                if p.grad is not None:
                    acc[0] += float(p.grad.detach().float().pow(2).sum())
                acc[1] += float(p.detach().float().pow(2).sum())
                break
    out = {}
    for stage, _ in stages:
        if stage in sums:
            g, w = sums[stage]
            out[stage] = math.sqrt(g) / (math.sqrt(w) if relative and w > 0 else 1.0)
    return out

