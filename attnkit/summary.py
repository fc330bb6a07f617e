"""Parameter counts per part of a model, for ``attnkit demo --summary`` and the docs."""
from __future__ import annotations

import torch.nn as nn

__all__ = ['parameter_table']


def parameter_table(model: nn.Module) -> str:
    """A table of parameter counts per top-level child (backbone, neck, head, ...), with the attention
    modules inside each part counted separately and a total line."""
    from .attention.base import AttentionModule  # the shared base of every attention module

    rows = []
    for name, child in model.named_children():
        total = sum(p.numel() for p in child.parameters())
        attn_params = {id(p): p for m in child.modules() if isinstance(m, AttentionModule) for p in m.parameters()}
        attn = sum(p.numel() for p in attn_params.values())
        trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
        rows.append((name, total, trainable, attn))
    total = sum(p.numel() for p in model.parameters())
    lines = [f"{'part':<20}{'parameters':>14}{'trainable':>14}{'in attention':>14}"]
    lines += [f'{n:<20}{t:>14,}{tr:>14,}{a:>14,}' for n, t, tr, a in rows]
    lines.append(f"{'total':<20}{total:>14,}{sum(p.numel() for p in model.parameters() if p.requires_grad):>14,}"
                 f"{sum(r[3] for r in rows):>14,}")
    return '\n'.join(lines)
