"""The classification split of the shapes demo data: every object cropped from its scene, in ImageFolder layout.

``cls/{train,val}/<shape>/<image id>_<k>.jpg``: object ``k`` of scene ``<image id>`` (the scene's own split), a
square around its visible box with a margin of ``MARGIN`` of the box's longer side on each side (moved, not cut,
to stay inside the scene; neighbouring objects may show at the edges, as in real crops), resized to
``crop_side(size)`` pixels (64 for the default 128-px scenes), JPEG quality 95. The class is the object's shape.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Sequence

import numpy as np
from PIL import Image

from .demo_scene import DemoObject

__all__ = ['CLS_DIR', 'MARGIN', 'crop_side', 'crop_box', 'write_object_crops']

CLS_DIR = 'cls'
MARGIN = 0.2


def crop_side(size: int) -> int:
    """Side in pixels of the crops of ``size``-pixel scenes: half the scene side, at least 16."""
    return max(16, size // 2)


def crop_box(vis_box: tuple[int, int, int, int], size: int, margin: float = MARGIN) -> tuple[int, int, int, int]:
    """The square (x0, y0, x1, y1) (exclusive ends) around the inclusive pixel box ``vis_box``, with ``margin`` x its
    longer side added on each side, shifted to lie inside the ``size`` x ``size`` scene."""
    x1, y1, x2, y2 = vis_box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    side = min(size, int(round(max(w, h) * (1 + 2 * margin))))
    cx, cy = (x1 + x2 + 1) / 2, (y1 + y2 + 1) / 2
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), size - side)
    y0 = min(max(y0, 0), size - side)
    return x0, y0, x0 + side, y0 + side


def write_object_crops(split_dir: str, image_id: int, image: np.ndarray, objects: Sequence[DemoObject],
                       size: int) -> Counter:
    """Write the crops of one scene's ``objects`` under ``split_dir/<shape>/``; returns the crops per class.

    Args:
        image: the rendered (size, size, 3) uint8 scene (before JPEG compression).
    """
    side = crop_side(size)
    counts: Counter = Counter()
    for k, obj in enumerate(objects):
        x0, y0, x1, y1 = crop_box(obj.vis_box, size)
        crop = Image.fromarray(image[y0:y1, x0:x1]).resize((side, side), Image.BILINEAR, reducing_gap=None)
        folder = os.path.join(split_dir, obj.shape)
        os.makedirs(folder, exist_ok=True)
        crop.save(os.path.join(folder, f'{image_id:06d}_{k}.jpg'), format='JPEG', quality=95, subsampling=0)
        counts[obj.shape] += 1
    return counts

