"""Detection transforms (albumentations DualTransforms, registered in TRANSFORMS).

* ``ResizeShortLong(short=800, long=1333)``: resize keeping the aspect ratio so that the short side is
  ``short`` unless that makes the long side exceed ``long`` (then the long side is ``long``). A list for
  ``short`` picks one value at random per image (multi-scale training).
* ``RandomRelativeCrop(scale=(0.6, 1.0))``: crop a random window whose sides are a random fraction of the
  image's; boxes are cut to the window and dropped when less than the pipeline's ``min_visibility`` of
  their area is left.

Both leave the boxes to albumentations, which keeps them normalised (0..1) internally in version >= 1.4, so a
resize does not touch the boxes and a crop uses albumentations' own box cropping.
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A  # attnkit/__init__ imports it first without the update check and no lasting env change
import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.augmentations.geometric import functional as fgeometric

from ...registry import TRANSFORMS

__all__ = ['ResizeShortLong', 'RandomRelativeCrop', 'resize_scale']


def resize_scale(height: int, width: int, short: int, long: int | None) -> float:
    """The factor that brings the short side to ``short`` without the long side passing ``long``."""
    scale = short / min(height, width)
    if long is not None and max(height, width) * scale > long:
        scale = long / max(height, width)
    return scale


@TRANSFORMS.register_module('ResizeShortLong')
class ResizeShortLong(A.DualTransform):
    """Aspect-preserving resize with short/long side limits (mmdet's ``Resize(scale=(1333, 800), keep_ratio=True)``).

    Args:
        short: target short side in pixels, or a list/tuple of candidates (one is drawn per image).
        long: the long side never exceeds this (``None``: no limit).
        interpolation: OpenCV interpolation for the image.
        p: probability (keep 1.0).
    """

    def __init__(self, short: int | Sequence[int] = 800, long: int | None = 1333,
                 interpolation: int = cv2.INTER_LINEAR, p: float = 1.0) -> None:
        super().__init__(p=p)
        shorts = list(short) if isinstance(short, (list, tuple)) else [short]
        if not shorts or any(int(s) <= 0 for s in shorts):
            raise ValueError(f"ResizeShortLong: short must be a positive int or a non-empty list of them, got {short!r}")
        if long is not None and long <= 0:
            raise ValueError(f"ResizeShortLong: long must be positive or None, got {long!r}")
        self.short = [int(s) for s in shorts]
        self.long = None if long is None else int(long)
        self.interpolation = interpolation

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params['shape'][:2]
        short = self.short[0] if len(self.short) == 1 else self.py_random.choice(self.short)
        scale = resize_scale(h, w, short, self.long)
        return {'out_size': (max(1, round(h * scale)), max(1, round(w * scale)))}

    def apply(self, img: np.ndarray, out_size: tuple[int, int] = (1, 1), **params: Any) -> np.ndarray:
        return fgeometric.resize(img, out_size, interpolation=self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, out_size: tuple[int, int] = (1, 1), **params: Any) -> np.ndarray:
        return fgeometric.resize(mask, out_size, interpolation=cv2.INTER_NEAREST)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # normalised coordinates do not change under a resize

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('short', 'long', 'interpolation')


@TRANSFORMS.register_module('RandomRelativeCrop')
class RandomRelativeCrop(BaseCrop):
    """Crop a window of random relative size ``(s_h * H, s_w * W)`` at a random place.

    Args:
        scale: range of the fraction of each side kept, drawn independently for height and width.
        p: probability of cropping.
    """

    def __init__(self, scale: Sequence[float] = (0.6, 1.0), p: float = 0.5) -> None:
        super().__init__(p=p)
        lo, hi = float(scale[0]), float(scale[1])
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"RandomRelativeCrop: scale must satisfy 0 < lo <= hi <= 1, got {scale!r}")
        self.scale = (lo, hi)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params['shape'][:2]
        ch = max(1, int(round(h * self.py_random.uniform(*self.scale))))
        cw = max(1, int(round(w * self.py_random.uniform(*self.scale))))
        y0 = self.py_random.randint(0, h - ch)
        x0 = self.py_random.randint(0, w - cw)
        return {'crop_coords': (x0, y0, x0 + cw, y0 + ch)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('scale',)
