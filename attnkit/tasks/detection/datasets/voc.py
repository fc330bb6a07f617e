"""Pascal VOC detection data (``Annotations/*.xml`` + ``ImageSets/Main/*.txt``)."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Sequence

import numpy as np

from ....errors import DataError
from ....registry import DATASETS
from .base import BoxChecker, DetectionDataset, PipelineCfg

__all__ = ['VOCDetection', 'VOC_CLASSES']

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
               'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
               'tvmonitor')


@DATASETS.register_module('VOCDetection')
class VOCDetection(DetectionDataset):
    """Pascal VOC detection dataset.

    VOC boxes are 1-based inclusive pixel indices; as in mmdet they become x1 = xmin - 1, y1 = ymin - 1,
    x2 = xmax, y2 = ymax (0-based corners, width = xmax - xmin + 1). ``difficult`` objects are ``ignore=True``
    boxes. Boxes are clipped to ``<size>``; boxes with no area left are dropped (one warning counts them).

    Args:
        root: a VOC year folder (``.../VOCdevkit/VOC2007``), or a list of ``(root, split_file)`` pairs for
            several years (VOC2007+2012 "0712").
        split_file: the image-id list, relative to ``root`` or absolute (e.g. ``ImageSets/Main/trainval.txt``);
            unused when ``root`` is a list of pairs.
        classes: class names (default: the 20 VOC classes); ``metainfo['classes']`` overrides it.
        pipeline: transform configs (list) or ``dict(transforms=[...], min_visibility=...)``.
        filter_empty: drop images without any non-difficult object.
        img_suffix: image file extension in ``JPEGImages``.

    Raises:
        DataError: a missing split file or XML file, malformed XML, an object whose class name is unknown.
    """

    def __init__(self, root: str | Sequence[Sequence[str]], split_file: str | None = None,
                 classes: Sequence[str] = VOC_CLASSES, pipeline: PipelineCfg = None, filter_empty: bool = False,
                 metainfo: dict | None = None, img_suffix: str = '.jpg') -> None:
        super().__init__(pipeline)
        if metainfo and metainfo.get('classes'):
            classes = metainfo['classes']
        self.classes = [str(c) for c in classes]
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.img_suffix = img_suffix
        if isinstance(root, (str, os.PathLike)):
            if split_file is None:
                raise DataError(f"VOCDetection: root {os.fspath(root)!r} given without a split_file.")
            parts = [(os.fspath(root), split_file)]
        else:
            parts = [(os.fspath(r), s) for r, s in root]
        self.parts = parts
        self.data_list = []
        for r, s in parts:
            self.data_list += self._load(r, s if os.path.isabs(s) else os.path.join(r, s), filter_empty)

    def _load(self, root: str, split_file: str, filter_empty: bool) -> list[dict[str, Any]]:
        if not os.path.isfile(split_file):
            raise DataError(f"VOC split file {split_file!r} does not exist.")
        with open(split_file) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        checker = BoxChecker(split_file)
        data = []
        for img_id in ids:
            xml_path = os.path.join(root, 'Annotations', f'{img_id}.xml')
            rec = self._parse(xml_path, split_file, checker)
            if filter_empty and not (~rec['ignore']).any():
                continue
            rec.update(id=img_id, file=os.path.join(root, 'JPEGImages', img_id + self.img_suffix),
                       record=f"image id {img_id!r} in {split_file!r} (annotation {xml_path!r})")
            data.append(rec)
        checker.report()
        return data

    def _parse(self, xml_path: str, split_file: str, checker: BoxChecker) -> dict[str, Any]:
        if not os.path.isfile(xml_path):
            raise DataError(f"VOC annotation file {xml_path!r} (listed in {split_file!r}) does not exist.")
        try:
            tree = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            raise DataError(f"VOC annotation file {xml_path!r} is not valid XML: {exc}") from exc
        size = tree.find('size')
        width = height = None
        if size is not None and size.findtext('width') and size.findtext('height'):
            width, height = float(size.findtext('width')), float(size.findtext('height'))
        boxes, labels, ignore, where = [], [], [], []
        for k, obj in enumerate(tree.findall('object')):
            name = (obj.findtext('name') or '').strip()
            what = f"object #{k} ({name!r}) in {xml_path!r}"
            if name not in self.class_index:
                raise DataError(f"Unknown class name {name!r} in {what}; known classes: {self.classes}.")
            bnd = obj.find('bndbox')
            try:
                xmin, ymin, xmax, ymax = (float(bnd.findtext(t)) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
            except (AttributeError, TypeError, ValueError) as exc:
                raise DataError(f"Malformed <bndbox> in {what}.") from exc
            boxes.append([xmin - 1, ymin - 1, xmax, ymax])
            labels.append(self.class_index[name])
            ignore.append(int(obj.findtext('difficult') or 0) == 1)
            where.append(what)
        boxes_np = np.asarray(boxes, np.float32).reshape(-1, 4)
        keep = checker(boxes_np, width, height, where)
        return {'width': width, 'height': height, 'boxes': boxes_np[keep],
                'labels': np.asarray(labels, np.int64)[keep], 'ignore': np.asarray(ignore, bool)[keep]}
