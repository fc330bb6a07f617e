"""Multi-label classification from detection annotations: an image's target is the set of classes it shows.

The boxes are read by the detection readers (:class:`~attnkit.tasks.detection.VOCDetection`,
:class:`~attnkit.tasks.detection.CocoDetection`, with all their checks); a class is

* present (1) when the image has a box of it that is not ignored,
* ignored (-1) when its only boxes are ignored (VOC ``difficult``, COCO ``iscrowd``): neither a positive nor a
  negative for that class's AP, as in the VOC classification benchmark,
* absent (0) otherwise.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ....registry import DATASETS
from ...detection.datasets import VOC_CLASSES, CocoDetection, VOCDetection
from .base import ClassificationDataset

__all__ = ['VOCMultiLabel', 'CocoMultiLabel', 'multi_hot']


def multi_hot(labels: np.ndarray, ignore: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) float32 of 1 (a kept box of the class), -1 (only ignored boxes), 0 (no box).

    Args:
        labels: (B,) class index per box. ignore: (B,) bool per box.
    """
    target = np.zeros(num_classes, np.float32)
    labels = np.asarray(labels, np.int64)
    ignore = np.asarray(ignore, bool)
    target[labels[ignore]] = -1
    target[labels[~ignore]] = 1
    return target


def _records(data_list: list[dict[str, Any]], num_classes: int, filter_empty: bool) -> list[tuple[str, Any]]:
    records = []
    for d in data_list:
        target = multi_hot(d['labels'], d['ignore'], num_classes)
        if filter_empty and not (target == 1).any():
            continue
        records.append((d['file'], target))
    return records


@DATASETS.register_module('VOCMultiLabel')
class VOCMultiLabel(ClassificationDataset):
    """Pascal VOC as multi-label classification (the VOC2007 classification task), from ``Annotations/*.xml``.

    Args:
        root, split_file, classes, img_suffix: as :class:`~attnkit.tasks.detection.VOCDetection` (``root`` may be a
            list of ``(root, split_file)`` pairs for VOC 07+12).
        pipeline: classification transform configs (resize / crop / flip).
        filter_empty: drop images with no present class.
        metainfo: ``{'classes': [...]}`` from training data or a checkpoint.
    """

    def __init__(self, root: Any, split_file: str | None = None, pipeline: Any = None,
                 classes: Sequence[str] = VOC_CLASSES, filter_empty: bool = False,
                 metainfo: Mapping[str, Any] | None = None, img_suffix: str = '.jpg') -> None:
        det = VOCDetection(root, split_file, classes=classes, metainfo=metainfo, img_suffix=img_suffix)
        super().__init__(_records(det.data_list, len(det.classes), filter_empty), det.classes, multi_label=True,
                         pipeline=pipeline, source=f'VOCMultiLabel {split_file or root!r}')


@DATASETS.register_module('CocoMultiLabel')
class CocoMultiLabel(ClassificationDataset):
    """COCO instances as multi-label classification (``instances_*.json``; crowd boxes are ignored labels).

    Args:
        ann_file, img_dir: as :class:`~attnkit.tasks.detection.CocoDetection`.
        pipeline: classification transform configs.
        filter_empty: drop images with no present class.
        metainfo: ``{'classes': [...]}`` from training data or a checkpoint.
    """

    def __init__(self, ann_file: str, img_dir: str, pipeline: Any = None, filter_empty: bool = False,
                 metainfo: Mapping[str, Any] | None = None) -> None:
        det = CocoDetection(ann_file, img_dir, metainfo=metainfo)
        super().__init__(_records(det.data_list, len(det.classes), filter_empty), det.classes, multi_label=True,
                         pipeline=pipeline, source=f'CocoMultiLabel {ann_file!r}')
