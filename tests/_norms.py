"""Shared test helper: non-trivial batch-norm statistics (and attention gammas) for equality tests of folding."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from attnkit.attention.base import AttentionModule


def randomise_norms(model: nn.Module, seed: int = 0, gammas: bool = False) -> None:
    """Random running statistics and affine parameters in every batch norm (fresh ones are the identity); with
    ``gammas``, every attention ``gamma`` drawn in [0.1, 0.9] (as after training), in the same module walk."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)) and m.running_mean is not None:
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(c, generator=g) - 0.5)
            if gammas and isinstance(m, AttentionModule) and m.gamma is not None:
                m.gamma.fill_(float(torch.rand((), generator=g)) * 0.8 + 0.1)
