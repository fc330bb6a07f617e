"""Augmentation pipelines from config, on albumentations.

A pipeline config is a list of transform dicts. Each ``type`` is looked up first in attnkit's
``TRANSFORMS`` registry (task-specific transforms such as a short/long-side resize), then in the
``albumentations`` namespace (``HorizontalFlip``, ``RandomBrightnessContrast``, ...)::

    pipeline = [dict(type='HorizontalFlip', p=0.5), dict(type='ColorJitter', p=0.5)]

:class:`Pipeline` runs the transforms on an image with its boxes and/or mask kept consistent, then
converts to tensors: the image stays uint8 (normalisation is the model's, see :mod:`attnkit.data.normalize`).
Boxes are ``pascal_voc`` format (x1, y1, x2, y2 in pixels).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from .randomness import current_seed  # noqa: E402
from ..registry import TRANSFORMS, closest_names  # noqa: E402
from .normalize import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402,F401  (re-exported)

__all__ = ['IMAGENET_MEAN', 'IMAGENET_STD', 'build_transform', 'Pipeline', 'as_pipeline']


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


def _contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array with positive strides that ``torch.from_numpy`` accepts.

    Flips and rotations leave negative strides, and ``np.ascontiguousarray`` keeps an array whose flags say
    contiguous — which numpy decides ignoring the strides of size-1 dimensions (a 1-pixel-high or 1x1 image
    rotated by RandomRotate90 keeps a negative stride there): copy whenever a stride is negative.
    """
    array = np.ascontiguousarray(array)
    if any(s < 0 for s in array.strides):
        array = array.copy(order='C')
    return array


class Pipeline:
    """Augment and tensorise one sample (the image stays uint8: the model normalises it).

    Args:
        transforms: transform configs (see module docstring), or built albumentations transforms.
        boxes: whether samples carry boxes (adds albumentations ``BboxParams`` with label fields
            ``labels`` and ``ignore``).
        min_visibility: boxes keeping less than this fraction of their area after a crop are dropped.
        min_area: boxes smaller than this many pixels after the transforms are dropped.
        mean, std: moved to the model: passing them raises ConfigError. Set ``model.normalize =
            dict(mean=(...), std=(...))`` (0..255 scale) instead, so a checkpoint and its config infer alone.
    """

    def __init__(self, transforms: Sequence[Mapping[str, Any] | A.BasicTransform] = (), *, boxes: bool = False,
                 min_visibility: float = 0.0, min_area: float = 0.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        if mean is not None or std is not None:
            raise ConfigError('Pipeline mean/std moved to the model: images now stay uint8 until the model '
                              'normalises them on its device. Remove mean/std from the pipeline and set '
                              'model.normalize=dict(mean=(r, g, b), std=(r, g, b)) on a 0..255 scale '
                              f'(given: mean={mean!r}, std={std!r}).')
        built = [t if isinstance(t, A.BasicTransform) else build_transform(t) for t in transforms]
        bbox_params = (A.BboxParams(format='pascal_voc', label_fields=['labels', 'ignore'],
                                    min_visibility=min_visibility, min_area=min_area, clip=True)
                       if boxes else None)
        self.boxes = boxes
        self.compose = A.Compose(built, bbox_params=bbox_params)

    def __call__(self, image: np.ndarray, *, boxes: np.ndarray | None = None, labels: np.ndarray | None = None,
                 ignore: np.ndarray | None = None, mask: np.ndarray | None = None) -> dict[str, Any]:
        """Run the pipeline.

        Args:
            image: (H, W, 3) uint8 RGB.
            boxes: (K, 4) float xyxy pixels (only when built with ``boxes=True``).
            labels: (K,) int; ignore: (K,) bool.
            mask: (H, W) uint8/int label map.

        Returns:
            ``image`` (3, H', W') uint8 (contiguous), ``img_size`` (H', W'), and when given: ``boxes`` (K', 4)
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
        seed = current_seed()  # inside SeededDataset: this sample's (seed, epoch, index) draws
        if seed is not None:
            self.compose.set_random_seed(seed % 2 ** 32)
        out = self.compose(**inputs)
        image = np.asarray(out['image'])
        if image.dtype != np.uint8:
            raise ConfigError(f'The pipeline must keep images uint8 (got {image.dtype}): drop Normalize/ToFloat '
                              'transforms; the model normalises (model.normalize, 0..255 scale).')
        img = torch.from_numpy(_contiguous(image.transpose(2, 0, 1)))  # (3, H', W') uint8
        result: dict[str, Any] = {'image': img, 'img_size': tuple(img.shape[-2:])}
        if self.boxes:
            result['boxes'] = torch.as_tensor(np.asarray(out['bboxes'], np.float32).reshape(-1, 4))
            result['labels'] = torch.as_tensor(np.asarray(out['labels'], np.int64).reshape(-1))
            result['ignore'] = torch.as_tensor(np.asarray(out['ignore'], bool).reshape(-1))
        if mask is not None:
            result['mask'] = torch.from_numpy(_contiguous(np.asarray(out['mask'])).astype(np.int64))
        return result


def as_pipeline(pipeline: Any) -> Pipeline:
    """A :class:`Pipeline` from a list of transform configs, ``dict(transforms=[...], **options)``, a Pipeline
    (returned as is) or None (no transform): the one way datasets turn their ``pipeline=`` argument into one."""
    if isinstance(pipeline, Pipeline):
        return pipeline
    if pipeline is None:
        return Pipeline([])
    if isinstance(pipeline, Mapping):
        args = dict(pipeline)
        return Pipeline(list(args.pop('transforms', ())), **args)
    return Pipeline([dict(t) if isinstance(t, Mapping) else t for t in pipeline])
