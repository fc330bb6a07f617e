"""What the COCO and VOC detection datasets share: records, box checks, the pipeline, the sample dict."""
from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ....data import Pipeline, collate, read_image

__all__ = ['DetectionDataset', 'BoxChecker', 'build_pipeline', 'short_repr']

PipelineCfg = Sequence[Mapping[str, Any]] | Mapping[str, Any] | Pipeline | None


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` marks the cut), for one-line error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def build_pipeline(pipeline: PipelineCfg) -> Pipeline:
    """A box-aware :class:`Pipeline` from a list of transform configs, or from
    ``dict(transforms=[...], min_visibility=0.3, min_area=...)`` (mean/std belong to the model:
    ``model.normalize``)."""
    if isinstance(pipeline, Pipeline):
        return pipeline
    args = dict(pipeline) if isinstance(pipeline, Mapping) else {'transforms': list(pipeline or ())}
    args.pop('boxes', None)
    with warnings.catch_warnings():  # albumentations warns about box parameters when there is no transform
        warnings.filterwarnings('ignore', message='Got processor for bboxes')
        return Pipeline(args.pop('transforms', ()), boxes=True, **args)


class BoxChecker:
    """Clips boxes to their image and drops the ones with no area left, counting them for ONE warning.

    Args:
        source: the annotation file(s), named in the warning.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.dropped = 0
        self.clipped = 0
        self.first: str | None = None

    def __call__(self, boxes: np.ndarray, width: float | None, height: float | None, where: list[str]
                 ) -> np.ndarray:
        """Clip (K, 4) xyxy ``boxes`` in place to the image; return the (K,) bool mask of boxes kept.

        ``where`` names each box (e.g. ``'annotation id 7'``) for the warning.
        """
        if len(boxes) == 0:
            return np.zeros(0, bool)
        before = boxes.copy()
        if width is not None and height is not None:
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        self.clipped += int((np.abs(before - boxes).sum(1) > 0).sum())
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not keep.all():
            self.dropped += int((~keep).sum())
            if self.first is None:
                self.first = where[int(np.flatnonzero(~keep)[0])]
        return keep

    def report(self) -> None:
        """Emit the single warning about dropped boxes, if any."""
        if self.dropped:
            warnings.warn(f"{self.source}: dropped {self.dropped} box(es) with zero area after clipping to the "
                          f"image (first: {self.first}).", UserWarning, stacklevel=3)


class DetectionDataset(torch.utils.data.Dataset):
    """Base class: ``self.data_list`` holds one record per image::

        {'id', 'file', 'width', 'height' (from the annotations, may be None),
         'boxes' (K, 4) float32 xyxy original pixels, 'labels' (K,) int64, 'ignore' (K,) bool, 'record': str}

    Subclasses fill ``data_list`` and ``classes``.
    """

    classes: list[str]
    data_list: list[dict[str, Any]]

    def __init__(self, pipeline: PipelineCfg = None) -> None:
        self.pipeline = build_pipeline(pipeline)

    @property
    def metainfo(self) -> dict[str, Any]:
        return {'classes': list(self.classes)}

    collate = staticmethod(collate)

    def __len__(self) -> int:
        return len(self.data_list)

    def get_ann_info(self, idx: int) -> dict[str, Any]:
        """The image's ground truth in original-image pixels (no image read)."""
        return self.data_list[idx]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """Sample dict of docs/design.md: ``image`` (3, H, W), ``meta``, ``boxes`` (K, 4), ``labels``, ``ignore``."""
        rec = self.data_list[idx]
        image = read_image(rec['file'], record=rec['record'])
        h0, w0 = image.shape[:2]
        boxes = rec['boxes'].copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w0)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h0)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out = self.pipeline(image, boxes=boxes[keep], labels=rec['labels'][keep], ignore=rec['ignore'][keep])
        h, w = out['img_size']
        meta = {'id': rec['id'], 'file': os.fspath(rec['file']), 'ori_size': (h0, w0), 'img_size': (h, w),
                'scale_factor': (w / w0, h / h0)}
        return {'image': out['image'], 'meta': meta, 'boxes': out['boxes'], 'labels': out['labels'],
                'ignore': out['ignore']}
