"""Detection metrics: VOC AP on hand-computed cases, CocoMetric against a direct pycocotools run."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch

from attnkit.evaluation import CocoMetric, VOCMetric
from attnkit.evaluation.voc import voc_ap


class _GT:
    """A minimal detection dataset: get_ann_info + classes."""

    def __init__(self, anns, classes):
        self.anns, self.classes = anns, classes

    def __len__(self):
        return len(self.anns)

    def get_ann_info(self, i):
        return self.anns[i]


def _ann(img_id, boxes, labels, ignore=None, size=(100, 100)):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {'id': img_id, 'boxes': boxes, 'labels': np.asarray(labels, np.int64),
            'ignore': np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool),
            'width': size[1], 'height': size[0]}


def _feed(metric, img_id, boxes, scores, labels):
    metric.process({'metas': [{'id': img_id}]},
                   [{'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                     'scores': torch.tensor(scores, dtype=torch.float32), 'labels': torch.tensor(labels)}])


def _voc_case(mode):
    # GT: two objects and one difficult object of class 0
    ds = _GT([_ann('a', [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 0], [False, False, True])],
             ['thing'])
    m = VOCMetric(ds, mode=mode)
    _feed(m, 'a', [[0, 0, 10, 10],      # .9 TP
                   [0, 0, 10, 10],      # .8 duplicate -> FP
                   [40, 40, 50, 50],    # .7 on the difficult object -> neither
                   [70, 70, 90, 90],    # .6 nothing there -> FP
                   [20, 20, 30, 30]],   # .5 TP
          [.9, .8, .7, .6, .5], [0, 0, 0, 0, 0])
    return m.compute()


def test_voc_area_and_11points_hand_computed():
    # ranks (difficult match removed): TP FP FP TP -> recall .5 .5 .5 1, precision 1 .5 .33 .5
    assert _voc_case('area')['mAP'] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert _voc_case('11points')['mAP'] == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_voc_ap_curve_definitions():
    rec, prec = np.array([0.2, 0.4, 0.4, 0.8]), np.array([1.0, 0.5, 0.4, 0.6])
    # area: envelope 1 on (0,.2], .6 on (.2,.8]
    assert voc_ap(rec, prec, 'area') == pytest.approx(0.2 * 1.0 + 0.6 * 0.6)
    # 11 points: t=0,.1,.2 -> 1; t=.3..0.8 -> .6 (6 points); t=.9,1 -> 0
    assert voc_ap(rec, prec, '11points') == pytest.approx((3 * 1.0 + 6 * 0.6) / 11)


def test_voc_plus_one_pixel_convention_and_class_mean():
    # det (1,0,4,3) vs gt (0,0,3,3): IoU 12/20 = .6 with the devkit's +1 pixel, 6/12 = .5 without
    ds = _GT([_ann(1, [[0, 0, 3, 3], [50, 50, 60, 60]], [0, 1])], ['a', 'b', 'c'])
    legacy, exact = VOCMetric(ds), VOCMetric(ds, legacy_coordinate=False)
    for m in (legacy, exact):
        _feed(m, 1, [[1, 0, 4, 3]], [0.9], [0])
    out = legacy.compute()
    assert out['AP_a'] == pytest.approx(1.0) and out['AP_b'] == 0.0 and np.isnan(out['AP_c'])
    assert out['mAP'] == pytest.approx(0.5)  # class c has no objects: not averaged
    assert exact.compute()['AP_a'] == 0.0
    assert 'gts' in legacy.summary()


def _coco_gt():
    images = [{'id': i, 'width': 100, 'height': 80, 'file_name': f'{i}.jpg'} for i in (1, 2, 3)]
    anns = [
        {'id': 1, 'image_id': 1, 'category_id': 3, 'bbox': [10, 10, 30, 20], 'area': 600, 'iscrowd': 0},
        {'id': 2, 'image_id': 1, 'category_id': 7, 'bbox': [50, 40, 40, 30], 'area': 1200, 'iscrowd': 0},
        {'id': 3, 'image_id': 2, 'category_id': 3, 'bbox': [5, 5, 8, 8], 'area': 64, 'iscrowd': 0},
        {'id': 4, 'image_id': 2, 'category_id': 7, 'bbox': [0, 0, 100, 80], 'area': 8000, 'iscrowd': 1},
        {'id': 5, 'image_id': 3, 'category_id': 7, 'bbox': [20, 20, 60, 50], 'area': 3000, 'iscrowd': 0},
    ]
    cats = [{'id': 3, 'name': 'cat'}, {'id': 7, 'name': 'dog'}]
    return {'images': images, 'annotations': anns, 'categories': cats}


# (image id, xyxy, score, contiguous label)
_DETS = [(1, [11, 9, 41, 31], .9, 0), (1, [52, 41, 88, 69], .8, 1), (1, [10, 10, 40, 30], .3, 1),
         (2, [5, 6, 12, 13], .7, 0), (2, [30, 30, 60, 60], .6, 1), (3, [25, 20, 80, 70], .85, 1),
         (3, [0, 0, 20, 20], .4, 0)]


def test_coco_metric_equals_direct_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from attnkit.tasks.detection import CocoDetection
    ann_file = tmp_path / 'instances.json'
    ann_file.write_text(json.dumps(_coco_gt()))
    ds = CocoDetection(str(ann_file), str(tmp_path))
    assert ds.cat_ids == [3, 7] and ds.classes == ['cat', 'dog']
    assert ds.get_ann_info(1)['ignore'].tolist() == [False, True]  # the crowd box is an ignore box

    metric = CocoMetric(ds)
    for img_id in (1, 2, 3):
        dets = [d for d in _DETS if d[0] == img_id]
        _feed(metric, img_id, [d[1] for d in dets], [d[2] for d in dets], [d[3] for d in dets])
    ours = metric.compute()
    assert list(ours)[:6] == ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        res = [{'image_id': i, 'category_id': [3, 7][lab], 'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                'score': s} for i, b, s, lab in _DETS]
        ev = COCOeval(gt, gt.loadRes(res), 'bbox')
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert [ours[k] for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')] == pytest.approx(list(ev.stats[:6]))
    assert 0 < ours['AP'] < 1
    table = metric.summary()
    assert 'cat' in table and 'dog' in table

    out = tmp_path / 'res.json'
    metric.dump_results(str(out))
    dumped = json.loads(out.read_text())
    assert len(dumped) == len(_DETS) and {d['category_id'] for d in dumped} == {3, 7}
    first = dumped[0]
    assert first['image_id'] == 1 and first['category_id'] == 3 and first['bbox'] == pytest.approx([11, 9, 30, 22])


def test_coco_metric_on_non_coco_dataset_builds_ground_truth():
    ds = _GT([_ann('x', [[0, 0, 20, 20], [30, 30, 60, 60]], [0, 1], [False, True]), _ann('y', [[5, 5, 50, 40]], [1])],
             ['a', 'b'])
    m = CocoMetric(ds)
    _feed(m, 'x', [[0, 0, 20, 20], [30, 30, 60, 60]], [0.9, 0.8], [0, 1])  # 2nd on an ignore box: not an FP
    _feed(m, 'y', [[5, 5, 50, 40]], [0.7], [1])
    assert m.compute()['AP'] == pytest.approx(1.0)
    m.reset()
    _feed(m, 'x', [[60, 60, 90, 90]], [0.9], [0])
    _feed(m, 'y', [], [], [])
    assert m.compute()['AP'] == pytest.approx(0.0)
