"""Why a ResNet checkpoint does not fit a ResNet: the first tensor whose shape differs, the stages whose block
counts differ, and what each side is (``ResNet-18, base_channels=32``), read from the tensors themselves."""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from torch import Tensor

__all__ = ['block_counts', 'describe_resnet', 'first_shape_mismatch', 'depth_mismatch']

# (bottleneck?, blocks in layer1..layer4) -> depth, as ARCH_SETTINGS in resnet.py
_DEPTHS = {(False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34, (True, (3, 4, 6, 3)): 50,
           (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152}
_BLOCK = re.compile(r'^(layer[1-4])\.(\d+)\.')


def block_counts(keys: Sequence[str] | Mapping[str, Tensor]) -> dict[str, int]:
    """``{'layer1': 2, ...}``: the number of residual blocks of each stage present in ``keys``."""
    counts: dict[str, int] = {}
    for key in keys:
        match = _BLOCK.match(key)
        if match:
            counts[match[1]] = max(counts.get(match[1], 0), int(match[2]) + 1)
    return counts


def describe_resnet(state: Mapping[str, Tensor], depth: int | None = None) -> str | None:
    """``'ResNet-18 (base_channels=32)'`` for a ResNet state dict, ``'a ResNet with basic blocks (2, 2, 2) per
    stage'`` when the stages do not match a known depth (or some are not built) and ``depth`` is not given; None
    when ``state`` is no ResNet's."""
    counts = block_counts(state)
    stem = state.get('conv1.weight')
    if not counts or stem is None or stem.dim() != 4:
        return None
    base = f'base_channels={stem.shape[0]}'
    bottleneck = any(k.startswith('layer1.0.conv3.') for k in state)
    blocks = tuple(counts.get(f'layer{i}', 0) for i in range(1, 5))
    depth = depth or _DEPTHS.get((bottleneck, blocks))
    if depth is not None:
        return f'ResNet-{depth} ({base})'
    shown = tuple(b for b in blocks if b)
    return f"a ResNet with {'bottleneck' if bottleneck else 'basic'} blocks {shown} per stage ({base})"


def first_shape_mismatch(state: Mapping[str, Tensor], own: Mapping[str, Tensor]
                         ) -> tuple[str, tuple[int, ...], tuple[int, ...], int] | None:
    """``(key, checkpoint shape, model shape, how many more keys differ)`` for the first key in the model's order
    whose shape differs, or None."""
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
           if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not bad:
        return None
    key, ckpt_shape, model_shape = bad[0]
    return key, ckpt_shape, model_shape, len(bad) - 1


def depth_mismatch(state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> str | None:
    """``"layer1 has 2 blocks in the checkpoint and 3 in the model"`` for the first stage both have whose block
    counts differ (a ResNet-18 checkpoint into a ResNet-34), or None."""
    mine, theirs = block_counts(own), block_counts(state)
    for stage, n_model in mine.items():
        n_ckpt = theirs.get(stage)
        if n_ckpt is not None and n_ckpt != n_model:
            return f'{stage} has {n_ckpt} blocks in the checkpoint and {n_model} in the model'
    return None
