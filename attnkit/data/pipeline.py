"""Augmentation pipelines from config, on albumentations.

A pipeline config is a list of transform dicts. Each ``type`` is looked up first in attnkit's
``TRANSFORMS`` registry (task-specific transforms such as a short/long-side resize), then in the
``albumentations`` namespace (``HorizontalFlip``, ``RandomBrightnessContrast``, ...)::

    pipeline = [dict(type='HorizontalFlip', p=0.5), dict(type='ColorJitter', p=0.5)]

:class:`Pipeline` runs the transforms on an image with its boxes and/or mask kept consistent, then
normalises and converts to tensors. Boxes are ``pascal_voc`` format (x1, y1, x2, y2 in pixels).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..registry import TRANSFORMS, closest_names  # noqa: E402

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'build_transform', 'Pipeline']

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(cfg: Mapping[str, Any]) -> A.BasicTransform:
    """One albumentations transform from ``dict(type=name, **kwargs)`` (attnkit TRANSFORMS first)."""
    args = dict(cfg)
    name = args.pop('type', None)
    if name is None:
        raise ConfigError(f"Transform config {dict(cfg)!r} has no 'type' key.")
    cls = TRANSFORMS.module_dict.get(name) or getattr(A, name, None)
    if cls is None:
        choices = list(TRANSFORMS.module_dict) + [n for n in dir(A) if n[:1].isupper()]
        close = closest_names(name, choices)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise ConfigError(f"Unknown transform type {name!r} (neither an attnkit transform nor an albumentations "
                          f"class).{hint}")
    try:
        return cls(**args)
    except TypeError as exc:
        raise ConfigError(f"Transform {name!r}: {exc}") from exc


class Pipeline:
    """Augment, normalise and tensorise one sample.

    Args:
        transforms: transform configs (see module docstring), or built albumentations transforms.
        boxes: whether samples carry boxes (adds albumentations ``BboxParams`` with label fields
            ``labels`` and ``ignore``).
        min_visibility: boxes keeping less than this fraction of their area after a crop are dropped.
        min_area: boxes smaller than this many pixels after the transforms are dropped.
        mean, std: normalisation, on a 0..1 scale.
    """

    def __init__(self, transforms: Sequence[Mapping[str, Any] | A.BasicTransform] = (), *, boxes: bool = False,
                 min_visibility: float = 0.0, min_area: float = 0.0,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        built = [t if isinstance(t, A.BasicTransform) else build_transform(t) for t in transforms]
        bbox_params = (A.BboxParams(format='pascal_voc', label_fields=['labels', 'ignore'],
                                    min_visibility=min_visibility, min_area=min_area, clip=True)
                       if boxes else None)
        self.boxes = boxes
        self.compose = A.Compose(built, bbox_params=bbox_params)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0

    def __call__(self, image: np.ndarray, *, boxes: np.ndarray | None = None, labels: np.ndarray | None = None,
                 ignore: np.ndarray | None = None, mask: np.ndarray | None = None) -> dict[str, Any]:
        """Run the pipeline.

        Args:
            image: (H, W, 3) uint8 RGB.
            boxes: (K, 4) float xyxy pixels (only when built with ``boxes=True``).
            labels: (K,) int; ignore: (K,) bool.
            mask: (H, W) uint8/int label map.

        Returns:
            ``image`` (3, H', W') float32 normalised, ``img_size`` (H', W'), and when given: ``boxes`` (K', 4)
            float32, ``labels`` (K',) int64, ``ignore`` (K',) bool, ``mask`` (H', W') int64.
        """
        inputs: dict[str, Any] = {'image': image}
        if self.boxes:
            k = 0 if boxes is None else len(boxes)
            inputs['bboxes'] = np.zeros((0, 4), np.float32) if k == 0 else np.asarray(boxes, np.float32)
            inputs['labels'] = np.zeros(0, np.int64) if labels is None else np.asarray(labels, np.int64)
            inputs['ignore'] = np.zeros(k, bool) if ignore is None else np.asarray(ignore, bool)
        if mask is not None:
            inputs['mask'] = mask
        out = self.compose(**inputs)
        img = torch.from_numpy(np.ascontiguousarray(out['image'])).permute(2, 0, 1).float()
        result: dict[str, Any] = {'image': (img - self.mean) / self.std, 'img_size': tuple(img.shape[-2:])}
        if self.boxes:
            result['boxes'] = torch.as_tensor(np.asarray(out['bboxes'], np.float32).reshape(-1, 4))
            result['labels'] = torch.as_tensor(np.asarray(out['labels'], np.int64).reshape(-1))
            result['ignore'] = torch.as_tensor(np.asarray(out['ignore'], bool).reshape(-1))
        if mask is not None:
            result['mask'] = torch.from_numpy(np.ascontiguousarray(out['mask']).astype(np.int64))
        return result
