"""COCO-format detection data (``instances_*.json``) through pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Any

import numpy as np

from ....errors import DataError
from ....registry import DATASETS
from .base import BoxChecker, DetectionDataset, PipelineCfg

__all__ = ['CocoDetection']


@DATASETS.register_module('CocoDetection')
class CocoDetection(DetectionDataset):
    """COCO detection dataset.

    Category ids map to contiguous labels 0..C-1 in the order of ``metainfo['classes']`` when given (matched by
    category name), else in increasing category id; ``cat_ids[label]`` maps back (for results files).
    ``iscrowd`` (or ``ignore``) objects become ``ignore=True`` boxes: never positives in training, and
    pycocotools leaves them out of the evaluation. Boxes are clipped to the image; boxes with no area left
    are dropped (one warning counts them).

    Args:
        ann_file: ``instances_*.json``.
        img_dir: folder holding the images' ``file_name``.
        pipeline: transform configs (list) or ``dict(transforms=[...], min_visibility=...)``.
        filter_empty: drop images without any non-ignored object (for training).
        metainfo: ``{'classes': [...]}`` to fix the label order (e.g. from a checkpoint).

    Raises:
        DataError: unreadable annotation file, an annotation with an unknown ``category_id``, a category
            name not in ``metainfo['classes']``, a malformed ``bbox``.
    """

    def __init__(self, ann_file: str, img_dir: str, pipeline: PipelineCfg = None, filter_empty: bool = False,
                 metainfo: dict | None = None) -> None:
        super().__init__(pipeline)
        from pycocotools.coco import COCO

        self.ann_file, self.img_dir = os.fspath(ann_file), os.fspath(img_dir)
        if not os.path.isfile(self.ann_file):
            raise DataError(f"COCO annotation file {self.ann_file!r} does not exist.")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco = COCO(self.ann_file)
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as exc:
            raise DataError(f"COCO annotation file {self.ann_file!r} cannot be read: {exc!r}") from exc
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c['id'])
        if metainfo and metainfo.get('classes'):
            self.classes = [str(c) for c in metainfo['classes']]
            index = {name: i for i, name in enumerate(self.classes)}
            for c in cats:
                if c['name'] not in index:
                    raise DataError(f"COCO annotation file {self.ann_file!r}: category id {c['id']} "
                                    f"{c['name']!r} is not one of the model's classes {self.classes}.")
            self.cat_ids = [None] * len(self.classes)
            for c in cats:
                self.cat_ids[index[c['name']]] = c['id']
        else:
            self.classes = [c['name'] for c in cats]
            self.cat_ids = [c['id'] for c in cats]
        self.cat2label = {cid: i for i, cid in enumerate(self.cat_ids) if cid is not None}
        self.data_list = self._load(filter_empty)

    def _load(self, filter_empty: bool) -> list[dict[str, Any]]:
        checker = BoxChecker(self.ann_file)
        data = []
        for img_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[img_id]
            anns = self.coco.imgToAnns.get(img_id, [])
            boxes, labels, ignore, where = [], [], [], []
            for ann in anns:
                rec = f"annotation id {ann.get('id')} (image id {img_id}) in {self.ann_file!r}"
                cid = ann.get('category_id')
                if cid not in self.cat2label:
                    raise DataError(f"Unknown category_id {cid!r} in {rec}; known ids: {sorted(self.cat2label)}.")
                bbox = ann.get('bbox')
                if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                    raise DataError(f"Malformed bbox {bbox!r} in {rec}; expected [x, y, width, height].")
                x, y, w, h = (float(v) for v in bbox)
                boxes.append([x, y, x + w, y + h])
                labels.append(self.cat2label[cid])
                ignore.append(bool(ann.get('iscrowd', 0)) or bool(ann.get('ignore', 0)))
                where.append(rec)
            boxes_np = np.asarray(boxes, np.float32).reshape(-1, 4)
            keep = checker(boxes_np, info.get('width'), info.get('height'), where)
            labels_np, ignore_np = np.asarray(labels, np.int64), np.asarray(ignore, bool)
            if filter_empty and not (~ignore_np[keep]).any():
                continue
            data.append({'id': img_id, 'file': os.path.join(self.img_dir, info['file_name']),
                         'width': info.get('width'), 'height': info.get('height'), 'boxes': boxes_np[keep],
                         'labels': labels_np[keep], 'ignore': ignore_np[keep],
                         'record': f"image id {img_id} in {self.ann_file!r}"})
        checker.report()
        return data
