"""COCO-format detection data (``instances_*.json``) through pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Any

import numpy as np

from ....data.checks import check_files_exist, resolve_inside
from ....errors import DataError
from ....registry import DATASETS
from .base import BoxChecker, DetectionDataset, PipelineCfg, short_repr

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

    Boxes are pixel-corner ``(x1, y1, x2, y2) = (x, y, x + w, y + h)`` from COCO's ``[x, y, w, h]``.

    Raises:
        DataError (one line, under 300 characters, naming the file and the record): an unreadable, non-UTF-8
            or invalid JSON file; no ``images`` or ``categories`` list; an annotation with an unknown
            ``category_id`` or ``image_id``; a category name not in ``metainfo['classes']``; a ``bbox`` that is
            not four finite numbers; a ``file_name`` that leaves ``img_dir``; listed images that do not exist
            (all are checked when the dataset is built: one ``stat`` each).
    """

    def __init__(self, ann_file: str, img_dir: str, pipeline: PipelineCfg = None, filter_empty: bool = False,
                 metainfo: dict | None = None) -> None:
        super().__init__(pipeline)
        from pycocotools.coco import COCO

        self.ann_file, self.img_dir = os.fspath(ann_file), os.fspath(img_dir)
        if not os.path.isfile(self.ann_file):
            raise DataError(f"COCO annotation file {self.ann_file!r} does not exist.")
        self.coco = COCO()
        self.coco.dataset = read_coco_json(self.ann_file)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.coco.createIndex()
        except (KeyError, TypeError) as exc:  # an annotation without 'id' / 'category_id', an unhashable id
            what = f'a record without {exc}' if isinstance(exc, KeyError) else f'an invalid id ({exc})'
            raise _fail(self.ann_file, f'has {what}; every annotation needs an id, an image_id and a category_id.'
                        ) from exc
        cats = sorted(self.coco.loadCats(self.coco.getCatIds()), key=lambda c: c['id'])
        if metainfo and metainfo.get('classes'):
            self.classes = [str(c) for c in metainfo['classes']]
            index = {name: i for i, name in enumerate(self.classes)}
            for c in cats:
                if c['name'] not in index:
                    raise DataError(f"COCO annotation file {self.ann_file!r}: category id {c['id']} "
                                    f"{c['name']!r} is not one of the model's classes "
                                    f"{short_repr(self.classes)}.")
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
                    raise DataError(f"Unknown category_id {short_repr(cid)} in {rec}; known ids: "
                                    f"{short_repr(sorted(self.cat2label))}.")
                bbox = ann.get('bbox')
                if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                   for v in bbox)):
                    raise DataError(f"Malformed bbox {short_repr(bbox)} in {rec}; expected [x, y, width, height] "
                                    f"as four numbers.")
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
            where = f"image id {img_id} in {self.ann_file!r}"
            file = resolve_inside(self.img_dir, info['file_name'], record=where)
            data.append({'id': img_id, 'file': file,
                         'width': info.get('width'), 'height': info.get('height'), 'boxes': boxes_np[keep],
                         'labels': labels_np[keep], 'ignore': ignore_np[keep],
                         'record': where})
        checker.report()
        check_files_exist((d['file'] for d in data), source=f"COCO annotation file {self.ann_file!r}")
        return data


def _fail(path: str, what: str) -> DataError:
    return DataError(f"COCO annotation file {path!r} {what}")


def read_coco_json(path: str) -> dict[str, Any]:
    """The checked content of a COCO ``instances_*.json``: a dict with ``images``, ``categories`` and
    ``annotations`` lists (``annotations`` may be absent: no objects), each image with an ``id`` and a string
    ``file_name``, each category with an ``id`` and a ``name``, each annotation with an ``image_id`` of a
    listed image.

    Raises:
        DataError: one line under 300 characters naming the file and, where there is one, the record.
    """
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror}.") from None
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as exc:
        raise _fail(path, f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    if not isinstance(data, dict):
        raise _fail(path, f"holds a JSON {type(data).__name__}, not an object with 'images' and 'categories'.")
    for key in ('images', 'categories'):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"has no {key!r} list (keys: {short_repr(sorted(data))}).")
    data.setdefault('annotations', [])
    if not isinstance(data['annotations'], list):
        raise _fail(path, "has an 'annotations' entry that is not a list.")
    for k, cat in enumerate(data['categories']):
        if not isinstance(cat, dict) or not isinstance(cat.get('id'), int) or not isinstance(cat.get('name'), str):
            raise _fail(path, f"categories[{k}] is {short_repr(cat)}; expected {{'id': int, 'name': str}}.")
    image_ids = set()
    for k, img in enumerate(data['images']):
        if not isinstance(img, dict) or 'id' not in img or not isinstance(img.get('file_name'), str):
            raise _fail(path, f"images[{k}] is {short_repr(img)}; expected an 'id' and a 'file_name' string.")
        image_ids.add(img['id'])
    for k, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict) or ann.get('image_id') not in image_ids:
            raise _fail(path, f"annotations[{k}] (id {short_repr(ann.get('id') if isinstance(ann, dict) else None)})"
                              f" refers to image_id "
                              f"{short_repr(ann.get('image_id') if isinstance(ann, dict) else None)}, "
                              f"which is not in 'images'.")
    return data
