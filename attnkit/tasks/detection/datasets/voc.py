"""Pascal VOC detection data (``Annotations/*.xml`` + ``ImageSets/Main/*.txt``)."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any, Sequence

import numpy as np

from ....data.checks import check_files_exist, resolve_inside
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

    Box convention (the one attnkit uses from reader to metric): VOC XML boxes are 1-based inclusive pixel
    indices ``xmin..xmax``; they become pixel-corner boxes ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax,
    y2 = ymax`` (0-based corners, ``x2 - x1 = xmax - xmin + 1``: the devkit's width), the frame the model
    predicts in. :class:`attnkit.evaluation.VOCMetric` computes the plain IoU of such boxes, which equals the
    devkit's +1-pixel IoU on the XML coordinates; no +1 is added anywhere else.

    ``<difficult>`` is 0 or 1 (``0.0``/``1.0`` accepted as the numbers they are; missing = 0); difficult objects
    are ``ignore=True`` boxes. Boxes are clipped to ``<size>``; boxes with no area left are dropped (one warning
    counts them). Every listed image is checked to exist when the dataset is built (one ``stat`` each).

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
        DataError (one line naming the file and the record): a missing split file or XML file, malformed XML,
            an object whose class name is unknown, a ``<bndbox>`` or ``<size>`` that is not numbers, a
            ``<difficult>`` other than 0/1, an image id that leaves ``root``, listed images that do not exist.
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
        for line_no, img_id in enumerate(ids, 1):
            xml_path = resolve_inside(os.path.join(root, 'Annotations'), f'{img_id}.xml',
                                      record=f"image id {img_id!r} (line {line_no}) in {split_file!r}")
            rec = self._parse(xml_path, split_file, checker)
            if filter_empty and not (~rec['ignore']).any():
                continue
            record = f"image id {img_id!r} in {split_file!r} (annotation {xml_path!r})"
            image = resolve_inside(os.path.join(root, 'JPEGImages'), img_id + self.img_suffix, record=record)
            rec.update(id=img_id, file=image, record=record)
            data.append(rec)
        checker.report()
        check_files_exist((d['file'] for d in data), source=f"VOC split file {split_file!r}")
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
            try:
                width, height = float(size.findtext('width')), float(size.findtext('height'))
            except ValueError:
                raise DataError(f"Malformed <size> (width {size.findtext('width')[:20]!r}, height "
                                f"{size.findtext('height')[:20]!r}) in {xml_path!r}.") from None
        boxes, labels, ignore, where = [], [], [], []
        for k, obj in enumerate(tree.findall('object')):
            name = (obj.findtext('name') or '').strip()
            what = f"object #{k} ({name!r}) in {xml_path!r}"
            if name not in self.class_index:
                raise DataError(f"Unknown class name {name!r} in {what}; known classes: {self.classes}.")
            bnd = obj.find('bndbox')
            try:
                xmin, ymin, xmax, ymax = (float(bnd.findtext(t)) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
            except (AttributeError, TypeError, ValueError):
                raise DataError(f"Malformed <bndbox> in {what}: xmin, ymin, xmax, ymax must be numbers.") from None
            boxes.append([xmin - 1, ymin - 1, xmax, ymax])
            labels.append(self.class_index[name])
            ignore.append(_difficult(obj.findtext('difficult'), what))
            where.append(what)
        boxes_np = np.asarray(boxes, np.float32).reshape(-1, 4)
        keep = checker(boxes_np, width, height, where)
        return {'width': width, 'height': height, 'boxes': boxes_np[keep],
                'labels': np.asarray(labels, np.int64)[keep], 'ignore': np.asarray(ignore, bool)[keep]}



def _difficult(text: str | None, what: str) -> bool:
    """``<difficult>`` as a bool: ``0``/``1`` (also ``0.0``/``1.0``, surrounding spaces); missing or empty = 0."""
    text = (text or '').strip()
    if not text:
        return False
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise DataError(f"<difficult> is {text[:20]!r} in {what}; expected 0 or 1.")
    return value == 1.0
