"""Segmentation transforms (albumentations ``DualTransform``s registered in ``TRANSFORMS``).

They move image and label map together; use them in a pipeline config beside albumentations' own
transforms (``HorizontalFlip``, ``ColorJitter``, ``PadIfNeeded(..., fill_mask=255)``)::

    pipeline = [
        dict(type='RandomResizeRatio', ratio_range=(0.5, 2.0), base_size=(2048, 512)),
        dict(type='RandomCropCatMax', height=512, width=512, cat_max_ratio=0.75),
        dict(type='HorizontalFlip', p=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PadIfNeeded', min_height=512, min_width=512, position='top_left',
             border_mode=0, fill=0, fill_mask=255),
    ]

Images are resized bilinearly, label maps with nearest neighbour (class indices are never blended).
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.core.type_definitions import Targets

from ...registry import TRANSFORMS

__all__ = ['RandomResizeRatio', 'RescaleKeepRatio', 'RandomCropCatMax', 'PhotoMetricDistortion',
           'rescale_size']


def rescale_size(h: int, w: int, base_size: int | Sequence[int] | None, ratio: float) -> tuple[int, int]:
    """The (h, w) an image of size (h, w) is resized to.

    Args:
        h, w: the input size.
        base_size: ``None``: scale the image by ``ratio``. An int ``s``: the short side becomes ``s * ratio``.
            A pair ``(long, short)`` (mmseg's ``scale=(2048, 512)``): keep the aspect ratio and make the image
            as large as possible with long side <= ``long * ratio`` and short side <= ``short * ratio``.
        ratio: the scale ratio drawn for this sample.
    """
    if base_size is None:
        factor = ratio
    elif isinstance(base_size, (int, float)):
        factor = base_size * ratio / min(h, w)
    else:
        long_edge, short_edge = max(base_size), min(base_size)
        factor = min(long_edge * ratio / max(h, w), short_edge * ratio / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


@TRANSFORMS.register_module()
class RandomResizeRatio(A.DualTransform):
    """Resize by a ratio drawn uniformly from ``ratio_range`` (relative to ``base_size``).

    Args:
        ratio_range: (low, high) ratio, e.g. (0.5, 2.0).
        base_size: see :func:`rescale_size` (``None``, an int short side, or a ``(long, short)`` pair).
        p: probability of resizing.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(self, ratio_range: Sequence[float] = (0.5, 2.0), base_size: int | Sequence[int] | None = None,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        if len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"RandomResizeRatio: ratio_range must be (low, high) with 0 < low <= high, "
                             f"got {ratio_range!r}.")
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.base_size = base_size

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params['shape'][:2]
        ratio = self.py_random.uniform(*self.ratio_range)
        return {'size': rescale_size(h, w, self.base_size, ratio)}

    def apply(self, img: np.ndarray, size: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int] = (0, 0), **params: Any) -> np.ndarray:
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('ratio_range', 'base_size')


@TRANSFORMS.register_module()
class RescaleKeepRatio(RandomResizeRatio):
    """Deterministic resize for testing: :class:`RandomResizeRatio` with ratio 1.

    Args:
        scale: ``(long, short)`` bound such as (2048, 512), or an int short side.
    """

    def __init__(self, scale: int | Sequence[int] = (2048, 512), p: float = 1.0) -> None:
        super().__init__(ratio_range=(1.0, 1.0), base_size=scale, p=p)
        self.scale = scale

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('scale',)


@TRANSFORMS.register_module()
class RandomCropCatMax(A.DualTransform):
    """Random crop that re-draws crops dominated by one class.

    A crop is accepted when the most frequent class covers less than ``cat_max_ratio`` of its labelled
    (non-ignore) pixels; after ``max_tries`` rejected draws the last crop is kept. An image smaller than
    the crop is cropped to its own size along that side (pad afterwards with ``PadIfNeeded``).

    Args:
        height, width: crop size.
        cat_max_ratio: 1.0 disables the re-draw.
        ignore_index: label not counted.
        max_tries: draws before giving up.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(self, height: int, width: int, cat_max_ratio: float = 0.75, ignore_index: int = 255,
                 max_tries: int = 10, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.height, self.width = int(height), int(width)
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def _draw(self, h: int, w: int) -> tuple[int, int, int, int]:
        ch, cw = min(self.height, h), min(self.width, w)
        y1 = self.py_random.randint(0, h - ch)
        x1 = self.py_random.randint(0, w - cw)
        return y1, x1, y1 + ch, x1 + cw

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params['shape'][:2]
        box = self._draw(h, w)
        mask = data.get('mask')
        if mask is not None and self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                y1, x1, y2, x2 = box
                labels = mask[y1:y2, x1:x2]
                _, counts = np.unique(labels[labels != self.ignore_index], return_counts=True)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                box = self._draw(h, w)
        return {'crop_box': box}

    def apply(self, img: np.ndarray, crop_box: tuple[int, int, int, int] = (0, 0, 0, 0),
              **params: Any) -> np.ndarray:
        y1, x1, y2, x2 = crop_box
        return np.ascontiguousarray(img[y1:y2, x1:x2])

    def apply_to_mask(self, mask: np.ndarray, crop_box: tuple[int, int, int, int] = (0, 0, 0, 0),
                      **params: Any) -> np.ndarray:
        y1, x1, y2, x2 = crop_box
        return np.ascontiguousarray(mask[y1:y2, x1:x2])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('height', 'width', 'cat_max_ratio', 'ignore_index', 'max_tries')


@TRANSFORMS.register_module()
class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg-style photometric distortion: brightness, contrast, saturation, hue, each with probability 1/2.

    Args:
        brightness_delta: added value range (pixels, 0..255).
        contrast_range, saturation_range: multiplier ranges.
        hue_delta: hue shift range in OpenCV hue units (0..180).
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def get_params(self) -> dict[str, Any]:
        r = self.py_random
        return {
            'brightness': r.uniform(-self.brightness_delta, self.brightness_delta) if r.random() < 0.5 else 0.0,
            'contrast': r.uniform(*self.contrast_range) if r.random() < 0.5 else 1.0,
            'contrast_first': r.random() < 0.5,
            'saturation': r.uniform(*self.saturation_range) if r.random() < 0.5 else 1.0,
            'hue': r.randint(-self.hue_delta, self.hue_delta) if r.random() < 0.5 else 0,
        }

    def apply(self, img: np.ndarray, brightness: float = 0.0, contrast: float = 1.0, contrast_first: bool = True,
              saturation: float = 1.0, hue: int = 0, **params: Any) -> np.ndarray:
        out = img.astype(np.float32) + brightness
        if contrast_first:
            out = out * contrast
        if saturation != 1.0 or hue != 0:
            hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
            hsv[..., 0] = (hsv[..., 0] + hue) % 180
            out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        if not contrast_first:
            out = out * contrast
        return np.clip(out, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('brightness_delta', 'contrast_range', 'saturation_range', 'hue_delta')

