"""COCO bbox mAP through pycocotools."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from typing import Any

import numpy as np

from ..registry import METRICS
from .base import BaseEvaluator
from .detection_utils import dataset_ground_truth, detection_records

__all__ = ['CocoMetric', 'COCO_METRIC_NAMES']

COCO_METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')


@METRICS.register_module('CocoMetric')
class CocoMetric(BaseEvaluator):
    """COCO bbox AP@[.5:.95], AP50, AP75, APs, APm, APl (primary ``AP``), per-class AP in ``summary()``.

    The ground truth is, in order of preference: ``ann_file``; the dataset's own pycocotools ``coco`` object
    (:class:`CocoDetection`: iscrowd objects are handled by pycocotools); or a COCO object built in memory
    from ``dataset.get_ann_info`` (e.g. VOC: ignore/difficult objects become ``iscrowd=1``, category id =
    label + 1, string image ids numbered in dataset order). Only the images that were processed are evaluated.

    Boxes are pixel-corner xyxy in original-image pixels (the readers' convention), written as COCO
    ``[x, y, w, h]``; scores and boxes are evaluated unrounded (``results_json`` rounds, for the file only).
    Predictions of a class the ground truth has no category for are left out with a warning (see
    :meth:`_detections`); undefined values are -1, as pycocotools reports them.

    Args:
        dataset: the evaluated detection dataset.
        ann_file: an ``instances_*.json`` to use as ground truth instead (category ids from ``dataset.cat_ids``
            or sorted ids).
    """

    def __init__(self, dataset: Any = None, ann_file: str | None = None) -> None:
        super().__init__(dataset)
        self.ann_file = ann_file
        self._gt = None
        self._cat_ids: list[int] = []
        self._id_map: dict[Any, int] | None = None
        self._eval = None
        self._text = ''

    def process(self, batch: dict[str, Any], predictions: list[Any]) -> None:
        self.results.extend(detection_records(batch, predictions))

    # ------------------------------------------------------------------ ground truth
    def _ground_truth(self):
        if self._gt is not None:
            return self._gt
        from pycocotools.coco import COCO
        if self.ann_file is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                self._gt = COCO(self.ann_file)
            self._cat_ids = list(getattr(self.dataset, 'cat_ids', None) or sorted(self._gt.getCatIds()))
        elif hasattr(self.dataset, 'coco') and hasattr(self.dataset, 'cat_ids'):
            self._gt, self._cat_ids = self.dataset.coco, list(self.dataset.cat_ids)
        else:
            self._gt = self._build_ground_truth()
        return self._gt

    def _build_ground_truth(self):
        from pycocotools.coco import COCO
        gts = dataset_ground_truth(self.dataset)
        ints = all(isinstance(k, (int, np.integer)) for k in gts)
        self._id_map = {k: int(k) if ints else n + 1 for n, k in enumerate(gts)}
        classes = list(getattr(self.dataset, 'classes', []))
        num_classes = max([len(classes)] + [int(g['labels'].max()) + 1 for g in gts.values() if len(g['labels'])])
        names = classes + [str(i) for i in range(len(classes), num_classes)]
        self._cat_ids = list(range(1, num_classes + 1))
        images, anns = [], []
        for key, g in gts.items():
            images.append({'id': self._id_map[key], 'width': g.get('width') or 0, 'height': g.get('height') or 0})
            for box, label, ig in zip(np.asarray(g['boxes'], np.float64), g['labels'], g['ignore']):
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                anns.append({'id': len(anns) + 1, 'image_id': self._id_map[key], 'category_id': int(label) + 1,
                             'bbox': [float(box[0]), float(box[1]), w, h], 'area': w * h, 'iscrowd': int(bool(ig))})
        coco = COCO()
        coco.dataset = {'images': images, 'annotations': anns,
                        'categories': [{'id': i + 1, 'name': n} for i, n in enumerate(names)]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def _image_id(self, img_id: Any) -> int:
        return self._id_map[img_id] if self._id_map is not None else int(img_id)

    # ------------------------------------------------------------------ results
    def _detections(self, rounded: bool) -> list[dict[str, Any]]:
        """The detections as COCO result dicts (original category ids), in record order.

        ``rounded``: boxes to 3 and scores to 5 decimals (for the results file only: rounding before the
        evaluation would turn near-equal scores into ties and change the ranking). Detections of a class the
        ground truth has no category for (``cat_ids[label] is None``: a checkpoint class absent from this
        annotation file) are left out, with one warning naming the classes — pycocotools evaluates only the
        ground truth's categories, so such detections could never count, exactly as for a listed category
        with no objects.
        """
        self._ground_truth()
        out, absent = [], {}
        classes = list(getattr(self.dataset, 'classes', []) or [])
        for r in self.results:
            image_id = self._image_id(r['img_id'])
            for box, score, label in zip(r['boxes'], r['scores'], r['labels']):
                label = int(label)
                cat_id = self._cat_ids[label] if 0 <= label < len(self._cat_ids) else None
                if cat_id is None:
                    name = classes[label] if 0 <= label < len(classes) else f'label {label}'
                    absent[name] = absent.get(name, 0) + 1
                    continue
                x1, y1, x2, y2 = (float(v) for v in box)
                bbox, score = [x1, y1, x2 - x1, y2 - y1], float(score)
                if rounded:
                    bbox, score = [round(v, 3) for v in bbox], round(score, 5)
                out.append({'image_id': image_id, 'category_id': int(cat_id), 'bbox': bbox, 'score': score})
        if absent:
            warnings.warn(f"CocoMetric: {sum(absent.values())} detection(s) of class(es) "
                          f"{', '.join(repr(n) for n in list(absent)[:5])} left out: the ground truth "
                          f"{self.ann_file or getattr(self.dataset, 'ann_file', '')!r} has no such category.",
                          UserWarning, stacklevel=3)
        return out

    def results_json(self) -> list[dict[str, Any]]:
        """The detections in the COCO results format, with the original category ids (boxes rounded to 3
        decimals, scores to 5: for writing only; ``compute()`` evaluates the unrounded values)."""
        return self._detections(rounded=True)

    def dump_results(self, path: str) -> str:
        """Write the COCO results JSON (original category ids) to ``path``; returns ``path``."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(self.results_json(), f)
        return path

    def compute(self) -> dict[str, float]:
        """AP, AP50, AP75, APs, APm, APl as pycocotools computes them over the processed images.

        Scores and boxes are evaluated unrounded. As in pycocotools, a value is -1 where it is undefined (no
        ground truth object in that size range) — also when there are no detections at all (then the defined
        values are 0).
        """
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        gt = self._ground_truth()
        dets = self._detections(rounded=False)
        img_ids = sorted({self._image_id(r['img_id']) for r in self.results})
        self._eval = None
        if not img_ids:  # nothing evaluated (pycocotools would read an empty imgIds as "all images")
            self._text = 'No images evaluated.'
            return {k: -1.0 for k in COCO_METRIC_NAMES}
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            if dets:
                dt = gt.loadRes(dets)
            else:  # loadRes cannot take an empty list: an empty result set with the ground truth's images
                dt = COCO()
                dt.dataset = {'images': list(gt.dataset.get('images', [])), 'annotations': [],
                              'categories': copy.deepcopy(gt.dataset.get('categories', []))}
                dt.createIndex()
            ev = COCOeval(gt, dt, 'bbox')
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        self._eval, self._text = ev, buf.getvalue() if dets else 'No detections.\n' + buf.getvalue()
        return {k: float(v) for k, v in zip(COCO_METRIC_NAMES, ev.stats[:6])}

    def per_class_ap(self) -> dict[str, tuple[float, float]]:
        """Class name → (AP@[.5:.95], AP50) from the last ``compute()`` (nan for classes without objects)."""
        if self._eval is None:
            return {}
        prec = self._eval.eval['precision']  # (T, R, K, A, M)
        cats = {c['id']: c['name'] for c in self._gt.loadCats(self._gt.getCatIds())}
        classes = list(getattr(self.dataset, 'classes', []) or [])
        out = {}
        for k, cid in enumerate(self._eval.params.catIds):
            if cid not in self._cat_ids:
                continue
            label = self._cat_ids.index(cid)
            name = classes[label] if label < len(classes) else cats.get(cid, str(cid))
            p, p50 = prec[:, :, k, 0, -1], prec[0, :, k, 0, -1]
            out[name] = (float(p[p > -1].mean()) if (p > -1).any() else float('nan'),
                         float(p50[p50 > -1].mean()) if (p50 > -1).any() else float('nan'))
        return out

    def summary(self) -> str:
        """pycocotools' summary followed by a per-class AP / AP50 table."""
        lines = [self._text.rstrip(), f"{'class':<20}{'AP':>8}{'AP50':>8}"]
        for name, (ap, ap50) in self.per_class_ap().items():
            lines.append(f"{name:<20}{ap:>8.4f}{ap50:>8.4f}")
        return '\n'.join(lines)
