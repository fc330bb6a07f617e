"""Pascal VOC mAP (the devkit's ``VOCevaldet`` rules).

Box convention, one for the whole path (reader → model → metric): boxes are **pixel-corner** coordinates
``(x1, y1, x2, y2)`` in original-image pixels, the box covering ``x1 <= x < x2``. The VOC XML's 1-based
inclusive pixel indices ``xmin..xmax`` become ``x1 = xmin - 1``, ``x2 = xmax`` in
:class:`attnkit.tasks.detection.VOCDetection`, so ``x2 - x1 = xmax - xmin + 1`` is the devkit's width and the
plain IoU of these boxes (:func:`box_iou`, no +1) *is* the devkit's IoU. Nothing adds a pixel again here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import METRICS
from .base import BaseEvaluator
from .detection_utils import dataset_ground_truth, detection_records

__all__ = ['VOCMetric', 'voc_ap', 'box_iou']


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, N) IoU of pixel-corner xyxy boxes ``a`` (M, 4) and ``b`` (N, 4): widths ``x2 - x1``, no +1.

    On boxes from :class:`~attnkit.tasks.detection.VOCDetection` (``x1 = xmin - 1``, ``x2 = xmax``) this equals
    the VOC devkit's IoU on the XML's inclusive coordinates (``iw = min(xmax) - max(xmin) + 1``, ...).
    """
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = iw.clip(min=0) * ih.clip(min=0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, np.finfo(np.float64).eps)


def voc_ap(recall: np.ndarray, precision: np.ndarray, mode: str = 'area') -> float:
    """AP from a precision/recall curve.

    Args:
        mode: ``'area'`` (VOC2010+: area under the monotone precision envelope) or ``'11points'`` (VOC2007:
            mean of the best precision at recall ≥ 0, 0.1, ..., 1).
    """
    if mode == '11points':
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    if mode != 'area':
        raise ValueError(f"voc_ap: mode must be 'area' or '11points', got {mode!r}")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@METRICS.register_module('VOCMetric')
class VOCMetric(BaseEvaluator):
    """VOC mAP at one IoU threshold.

    Detections of a class are taken in decreasing score over all images — equal scores in dataset order (then
    in the model's order within an image), as the devkit's stable sort of a detections file written image by
    image; the engine merges the records of all processes in dataset order, so the number does not depend on
    the number of processes. Each is a true positive when its best-overlapping ground truth of that class
    (:func:`box_iou` > ``iou_thr`` on pixel-corner boxes, = the devkit's +1-pixel IoU on the XML's
    coordinates, see the module docstring) is not yet taken,
    a false positive when it is (duplicates) or when no ground truth overlaps enough. A detection whose best
    match is a difficult (ignore) object counts as neither, and difficult objects are not counted in the
    recall. mAP averages the classes that have at least one non-difficult object in the evaluated images.

    Args:
        dataset: the evaluated detection dataset (ground truth via ``get_ann_info``; ``classes``).
        iou_thr: IoU threshold.
        mode: ``'area'`` or ``'11points'``.
    """

    def __init__(self, dataset: Any = None, iou_thr: float = 0.5, mode: str = 'area') -> None:
        super().__init__(dataset)
        if mode not in ('area', '11points'):
            raise ValueError(f"VOCMetric: mode must be 'area' or '11points', got {mode!r}")
        self.iou_thr, self.mode = iou_thr, mode
        self._per_class: list[tuple[str, int, int, float]] = []

    def process(self, batch: dict[str, Any], predictions: list[Any]) -> None:
        self.results.extend(detection_records(batch, predictions))

    def _class_ap(self, c: int, gts: dict[Any, dict[str, Any]], img_ids: list[Any]) -> tuple[float, int, int]:
        gt_c = {}
        npos = 0
        for i in img_ids:
            g = gts[i]
            m = g['labels'] == c
            gt_c[i] = (np.asarray(g['boxes'], np.float64)[m], np.asarray(g['ignore'], bool)[m])
            npos += int((~gt_c[i][1]).sum())
        dets = [(r['img_id'], s, b) for r in self.results
                for s, b, lab in zip(r['scores'], r['boxes'], r['labels']) if lab == c]
        if npos == 0:
            return float('nan'), 0, len(dets)
        order = np.argsort(-np.array([d[1] for d in dets], np.float64), kind='stable')
        tp = np.zeros(len(dets))
        fp = np.zeros(len(dets))
        taken = {i: np.zeros(len(gt_c[i][0]), bool) for i in img_ids}
        for rank, j in enumerate(order):
            img_id, _, box = dets[j]
            g_boxes, g_ignore = gt_c[img_id]
            if len(g_boxes) == 0:
                fp[rank] = 1
                continue
            ious = box_iou(np.asarray(box, np.float64)[None], g_boxes)[0]
            k = int(ious.argmax())
            if ious[k] > self.iou_thr:
                if g_ignore[k]:
                    continue  # matched a difficult object: neither TP nor FP
                if not taken[img_id][k]:
                    tp[rank], taken[img_id][k] = 1, True
                else:
                    fp[rank] = 1
            else:
                fp[rank] = 1
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        keep = (tp + fp) > 0  # drop ranks of detections that matched difficult objects
        return voc_ap(recall[keep], precision[keep], self.mode), npos, len(dets)

    def compute(self) -> dict[str, float]:
        """``{'mAP': ..., 'AP_<class>': ...}`` over the images in ``self.results``."""
        gts = dataset_ground_truth(self.dataset)
        img_ids = list(dict.fromkeys(r['img_id'] for r in self.results))
        missing = [i for i in img_ids if i not in gts]
        if missing:
            raise ValueError(f"VOCMetric: image ids {missing[:5]} are not in the evaluated dataset.")
        classes = list(getattr(self.dataset, 'classes', []))
        num_classes = max([len(classes)] + [int(g['labels'].max()) + 1 for g in gts.values() if len(g['labels'])])
        names = classes + [str(i) for i in range(len(classes), num_classes)]
        self._per_class = []
        aps = {}
        for c in range(num_classes):
            ap, npos, ndet = self._class_ap(c, gts, img_ids)
            self._per_class.append((names[c], npos, ndet, ap))
            aps[f'AP_{names[c]}'] = ap
        valid = [a for a in aps.values() if not np.isnan(a)]
        return {'mAP': float(np.mean(valid)) if valid else 0.0, **aps}

    def summary(self) -> str:
        """A per-class table (objects, detections, AP) of the last ``compute()``."""
        lines = [f"{'class':<16}{'gts':>7}{'dets':>8}{'AP':>8}"]
        for name, npos, ndet, ap in self._per_class:
            lines.append(f"{name:<16}{npos:>7}{ndet:>8}{'n/a' if np.isnan(ap) else f'{ap:.4f}':>8}")
        return '\n'.join(lines)
