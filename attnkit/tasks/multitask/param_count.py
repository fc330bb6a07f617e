"""Parameter count of a multi-task model against the single-task models it replaces.

    python -m attnkit.tasks.multitask.param_count \\
        configs/demo/multitask_r18_shapes.py \\
        configs/demo/fcos_r18-cbam_fpn_shapes.py configs/demo/danet_r18-d8_shapes.py configs/demo/mcan_r18_gru_shapes.py

Each model is built with its training set's metainfo (so class and answer counts are the real ones); backbone
``pretrained`` weights are not loaded. Prints one Markdown table: parameters of the backbone, of the rest, and in
all, for the multi-task model, each single-task model and their sum.
"""
from __future__ import annotations

import sys
from typing import Any

from torch import nn


def build_with_train_metainfo(path: str, synthetic: bool = False) -> nn.Module:
    """The model of config ``path``, built with its training dataset's metainfo (random weights); with
    ``synthetic``, with stand-in metainfo of the benchmark's label-space sizes instead (no data read:
    :func:`~attnkit.tasks.multitask.label_spaces.synthetic_metainfo`)."""
    from ...builder import build_dataset, build_model
    from ...config import load_config
    from ...engine.checkpoint import skip_backbone_weights
    from .label_spaces import synthetic_metainfo
    cfg = load_config(path)
    if synthetic:
        metainfo = synthetic_metainfo(cfg)
    else:
        metainfo = getattr(build_dataset(cfg['data']['train']['dataset']), 'metainfo', None)
    # the pre-training file is not read; the structure it implies (identity-init gammas) is kept and counted
    return build_model(skip_backbone_weights(cfg['model']), metainfo=metainfo)


def count(model: nn.Module) -> dict[str, int]:
    """``{'backbone': ..., 'rest': ..., 'total': ...}`` parameter counts (each tensor once)."""
    total = sum(p.numel() for p in model.parameters())
    backbone = getattr(model, 'backbone', None)
    bb = sum(p.numel() for p in backbone.parameters()) if backbone is not None else 0
    return {'backbone': bb, 'rest': total - bb, 'total': total}


def table(multi: str, singles: list[str]) -> str:
    rows: list[tuple[str, dict[str, Any]]] = [(multi, count(build_with_train_metainfo(multi)))]
    single_counts = [(p, count(build_with_train_metainfo(p))) for p in singles]
    rows += single_counts
    rows.append(('sum of the single-task models', {k: sum(c[k] for _, c in single_counts)
                                                    for k in ('backbone', 'rest', 'total')}))
    lines = ['| model | backbone | necks + heads (+ question encoder) | total |', '|---|---:|---:|---:|']
    lines += [f"| {name} | {c['backbone'] / 1e6:.3f} M | {c['rest'] / 1e6:.3f} M | {c['total'] / 1e6:.3f} M |"
              for name, c in rows]
    ratio = rows[0][1]['total'] / rows[-1][1]['total']
    return '\n'.join(lines) + f'\n\nmulti-task / sum of single-task = {ratio:.2f}'


if __name__ == '__main__':
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    print(table(sys.argv[1], sys.argv[2:]))
