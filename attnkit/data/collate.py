"""Batching samples: pad uint8 images (with 0) and label maps (with 255) to a multiple of ``size_divisor``."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

__all__ = ['collate', 'pad_to_multiple']

# sample key -> batch key for the keys that are renamed when batched
_RENAME = {'image': 'images', 'mask': 'masks', 'meta': 'metas'}
# per-sample keys whose sizes differ between samples: kept as lists
_LIST_KEYS = {'boxes', 'labels', 'ignore', 'meta'}


def pad_to_multiple(tensors: Sequence[torch.Tensor], size_divisor: int, value: float) -> torch.Tensor:
    """Stack (C, H, W) or (H, W) tensors into one batch, padding bottom/right to a multiple of ``size_divisor``."""
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    if size_divisor > 1:
        h = int(math.ceil(h / size_divisor) * size_divisor)
        w = int(math.ceil(w / size_divisor) * size_divisor)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), value)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def collate(samples: Sequence[dict[str, Any]], size_divisor: int = 32, mask_pad_value: int = 255) -> dict[str, Any]:
    """Join samples into the batch dict of docs/design.md.

    Args:
        samples: dicts with ``image`` (3, H, W) uint8, ``meta`` (dict) and any task keys: ``mask`` (H, W) long,
            ``boxes`` (K, 4), ``labels`` (K,), ``ignore`` (K,), other tensors of equal shape (stacked) or
            other values (kept as lists).
        size_divisor: images and masks are padded (bottom/right) to a multiple of this.
        mask_pad_value: the label written into padding (the ignore index).

    Returns:
        ``images`` (N, 3, H', W') uint8 padded with 0 (the model normalises them and zeroes the padding again,
        see :mod:`attnkit.data.normalize`), ``masks`` (N, H', W') when samples have masks, ``metas`` (list), lists
        for boxes/labels/ignore, stacked tensors for the rest. Each meta gains ``pad_size`` (H', W').
    """
    batch: dict[str, Any] = {}
    keys = samples[0].keys()
    for key in keys:
        values = [s[key] for s in samples]
        name = _RENAME.get(key, key)
        if key == 'image':
            batch[name] = pad_to_multiple(values, size_divisor, 0)
        elif key == 'mask':
            batch[name] = pad_to_multiple(values, size_divisor, mask_pad_value)
        elif key in _LIST_KEYS:
            batch[name] = list(values)
        elif isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            batch[name] = torch.stack(values)
        else:
            batch[name] = list(values)
    if 'images' in batch and 'metas' in batch:
        pad = tuple(batch['images'].shape[-2:])
        for meta in batch['metas']:
            meta['pad_size'] = pad
    return batch
