"""Recorded attention maps sorted into what can be drawn: spatial maps, channel weights, self-attention, rollout.

``attnkit.attention.record`` gives ``{module name: tensor}``. Recorded twice — once with a query point, once
without — a self-attention map changes shape ((N, heads, H, W) vs (N, heads, HW, HW)) while a spatial gate
((N, 1, H, W)) does not: that tells the kinds apart without knowing the module classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ['AttentionMap', 'classify_maps', 'attention_rollout', 'rollout_groups']


@dataclass
class AttentionMap:
    """One recorded map of one image.

    Attributes:
        module: the qualified module name (``name + '.channel'`` for CBAM's channel part).
        kind: 'attention' (spatial gate (1, h, w)), 'self_attention' (query map (heads, h, w)), 'channel' (C,),
            or 'channel_affinity' (C, C).
        value: the map of image 0: (1, h, w), (heads, h, w), (C,) or (C, C), float32 on the CPU.
        full: self-attention only: (heads, hw, hw) rows = queries (for rollout), or None.
    """
    module: str
    kind: str
    value: Tensor
    full: Tensor | None = None


def classify_maps(query_maps: dict[str, Tensor], full_maps: dict[str, Tensor] | None = None) -> list[AttentionMap]:
    """Sort the maps of one forward with a query (and, optionally, one without) by kind; image 0 only.

    Args:
        query_maps: ``record(model, query=(y, x))``'s maps.
        full_maps: ``record(model)``'s maps of the same input, or None (then a 4-D map with more than one head is
            taken for self-attention and a one-channel one for a spatial gate).
    """
    out = []
    for name, m in query_maps.items():
        m = m[0].detach().float().cpu()
        full = None if full_maps is None else full_maps.get(name)
        if m.dim() == 1:
            out.append(AttentionMap(name, 'channel', m))
        elif m.dim() == 2:
            out.append(AttentionMap(name, 'channel_affinity', m))
        elif m.dim() == 3:
            changed = full is not None and tuple(full.shape[1:]) != tuple(query_maps[name].shape[1:])
            if changed or (full_maps is None and m.shape[0] > 1):
                out.append(AttentionMap(name, 'self_attention', m,
                                        None if full is None else full[0].detach().float().cpu()))
            elif m.shape[-2:] != (1, 1):
                out.append(AttentionMap(name, 'attention', m[:1]))
            else:
                out.append(AttentionMap(name, 'channel', m.flatten()))
    return out


def attention_rollout(maps: Sequence[Tensor], residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) across stacked self-attention layers.

    Each layer's heads are averaged, the residual connection is added as ``residual * I + (1 - residual) * A``,
    rows are renormalised to sum to 1, and the layers are multiplied from the last to the first:
    ``R = Â_L · ... · Â_1``. ``R[i, j]``: how much output token ``i`` draws on input token ``j``.

    Args:
        maps: per layer, in forward order, (heads, L, L) or (L, L) attention probabilities (rows = queries).
        residual: the weight of the identity (0.5 in the paper; 0 multiplies the raw maps).

    Returns:
        (L, L) rollout.
    """
    if not maps:
        raise ValueError('attention_rollout needs at least one attention map.')
    result = None
    for a in maps:
        a = a.float()
        if a.dim() == 3:
            a = a.mean(0)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def rollout_groups(maps: Sequence[AttentionMap]) -> list[list[AttentionMap]]:
    """Runs of two or more self-attention maps with full matrices of one token count, in forward order."""
    groups: dict[int, list[AttentionMap]] = {}
    for m in maps:
        if m.kind == 'self_attention' and m.full is not None and m.full.dim() == 3 \
                and m.full.shape[-1] == m.full.shape[-2]:
            groups.setdefault(int(m.full.shape[-1]), []).append(m)
    return [g for g in groups.values() if len(g) >= 2]
