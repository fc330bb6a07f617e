"""Self-attention that ``attnkit.attention.record`` does not see: the grid self-attention of the MCAN VQA head.

MCAN's ``MultiHeadAttention`` runs through ``F.scaled_dot_product_attention`` and builds no probability matrix;
a forward hook on each decoder layer's ``self_att`` recomputes softmax(q kᵀ / sqrt(d_head)) from the module's
own projections (the same numbers SDPA uses), so rollout can chain the stacked grid layers.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ['record_grid_self_attention']


def _probs(module: nn.Module, x: Tensor, kv: Tensor) -> Tensor:
    n, lq, d = x.shape
    h = module.heads
    q = module.q(x).view(n, lq, h, d // h).transpose(1, 2)
    k = module.k(kv).view(n, kv.shape[1], h, d // h).transpose(1, 2)
    return (q @ k.transpose(-1, -2) / math.sqrt(d // h)).softmax(-1)  # (N, heads, Lq, Lk)


@contextmanager
def record_grid_self_attention(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Yield ``{qualified name: (N, heads, L, L)}`` of the grid self-attention layers (``*.decoder.<i>.self_att``)
    filled by forwards inside the context; empty for models without them."""
    maps: dict[str, Tensor] = {}
    hooks = []
    for name, m in model.named_modules():
        parts = name.split('.')
        if len(parts) >= 3 and parts[-1] == 'self_att' and parts[-3] == 'decoder' and hasattr(m, 'heads') \
                and hasattr(m, 'q') and hasattr(m, 'k'):
            def hook(mod: nn.Module, args: tuple, out: Tensor, name: str = name) -> None:
                x, kv = args[0], args[1]
                if x is kv or torch.equal(x, kv):
                    with torch.no_grad():
                        maps[name] = _probs(mod, x, kv).detach()
            hooks.append(m.register_forward_hook(hook))
    try:
        yield maps
    finally:
        for h in hooks:
            h.remove()
