"""One image through a test pipeline into a batch of one: what every task's ``attnkit infer`` starts with."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .collate import collate
from .io import read_image
from .pipeline import Pipeline

__all__ = ['prepare_image']


def prepare_image(path: str, pipeline: Pipeline, device: torch.device | str = 'cpu') -> tuple[np.ndarray, dict[str, Any]]:
    """Read ``path``, run ``pipeline`` on it and collate it alone.

    Returns:
        The original (H0, W0, 3) uint8 RGB image, and the batch: ``images`` (1, 3, H', W') on ``device`` (padded
        to a multiple of 32) and ``metas`` with ``id``, ``file``, ``ori_size``, ``img_size``, ``scale_factor``,
        ``pad_size``, as a dataset sample would carry (docs/design.md).
    """
    image = read_image(path, record='the infer command line')
    out = pipeline(image)
    h0, w0 = image.shape[:2]
    h, w = out['img_size']
    meta = {'id': os.path.basename(path), 'file': path, 'ori_size': (h0, w0), 'img_size': (h, w),
            'scale_factor': (w / w0, h / h0)}
    batch = collate([{'image': out['image'], 'meta': meta}])
    batch['images'] = batch['images'].to(device)
    return image, batch
