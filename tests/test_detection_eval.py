"""Detection metrics: VOC AP on hand-computed cases, CocoMetric against a direct pycocotools run."""
import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch

from attnkit.evaluation import CocoMetric, VOCMetric
from attnkit.evaluation.voc import box_iou, voc_ap
from attnkit.tasks.detection import CocoDetection, VOCDetection


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


def test_voc_pixel_corner_iou_and_class_mean():
    # pixel-corner boxes, no +1: det (1,0,4,3) vs gt (0,0,3,3) overlap 2x3 = 6 of 9 + 9 - 6 = 12 -> IoU .5 (not > .5)
    assert box_iou(np.array([[1., 0, 4, 3]]), np.array([[0., 0, 3, 3]]))[0, 0] == pytest.approx(0.5)
    ds = _GT([_ann(1, [[0, 0, 3, 3], [50, 50, 60, 60]], [0, 1])], ['a', 'b', 'c'])
    hit, miss = VOCMetric(ds), VOCMetric(ds)
    _feed(hit, 1, [[0.5, 0, 3, 3]], [0.9], [0])  # IoU 7.5 / 9 = .83
    _feed(miss, 1, [[1, 0, 4, 3]], [0.9], [0])   # IoU .5: the devkit's rule is ov > thr, so a false positive
    out = hit.compute()
    assert out['AP_a'] == pytest.approx(1.0) and out['AP_b'] == 0.0 and np.isnan(out['AP_c'])
    assert out['mAP'] == pytest.approx(0.5)  # class c has no objects: not averaged
    assert miss.compute()['AP_a'] == 0.0
    assert 'gts' in hit.summary()


def _devkit_iou(det, gt):
    """VOCevaldet's overlap on 1-based inclusive pixel indices (xmin, ymin, xmax, ymax), written out again."""
    iw = min(det[2], gt[2]) - max(det[0], gt[0]) + 1
    ih = min(det[3], gt[3]) - max(det[1], gt[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    ua = (det[2] - det[0] + 1) * (det[3] - det[1] + 1) + (gt[2] - gt[0] + 1) * (gt[3] - gt[1] + 1) - iw * ih
    return iw * ih / ua


# copies of ../shared/fixtures/voc2007 (tests/fixtures/SOURCES.md): a user's clone has no ../shared
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')


def _real_voc2007(tmp_path):
    """A VOC2007 tree with the real image 000001 (dog 48,240,195,371 and person 8,12,352,498 in the XML)."""
    root = tmp_path / 'VOC2007'
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (root / sub).mkdir(parents=True)
    shutil.copy(os.path.join(FIXTURES, 'voc2007', '000001.xml'), root / 'Annotations')
    shutil.copy(os.path.join(FIXTURES, 'voc2007', '000001.jpg'), root / 'JPEGImages')
    (root / 'ImageSets' / 'Main' / 'test.txt').write_text('000001\n')
    return VOCDetection(str(root), 'ImageSets/Main/test.txt')


def test_voc_reader_to_metric_iou_is_the_devkit_iou_on_real_voc2007(tmp_path):
    ds = _real_voc2007(tmp_path)
    info = ds.get_ann_info(0)
    dog_xml = (48, 240, 195, 371)
    assert [ds.classes[c] for c in info['labels']] == ['dog', 'person']
    # detections written as the devkit reads them (1-based inclusive), the model predicts pixel corners
    dets_xml = [(64, 298, 195, 371), (63, 299, 195, 371), (40, 230, 190, 380), (48, 240, 195, 371),
                (150, 300, 160, 310)]
    corners = np.array([[x1 - 1, y1 - 1, x2, y2] for x1, y1, x2, y2 in dets_xml], np.float64)
    ours = box_iou(corners, info['boxes'][:1].astype(np.float64))[:, 0]
    ref = [_devkit_iou(d, dog_xml) for d in dets_xml]
    assert ours.tolist() == pytest.approx(ref, abs=1e-12)
    assert ref[0] == 0.5 and ref[1] == pytest.approx(0.49698, abs=1e-5)  # the double +1 made them .5034, .5004
    # through VOCMetric: IoU exactly .5 is not > .5 for the devkit -> no true positive (AP 0), and a hit at .49
    for thr, expected in ((0.5, 0.0), (0.49, 1.0)):
        metric = VOCMetric(ds, iou_thr=thr)
        metric.process({'metas': [{'id': '000001'}]},
                       [{'boxes': torch.tensor(corners[:1], dtype=torch.float32), 'scores': torch.tensor([0.9]),
                         'labels': torch.tensor([ds.classes.index('dog')])}])
        assert metric.compute()['AP_dog'] == expected, thr


def test_voc_tied_scores_ranked_in_record_order():
    # three images, one object each, equal scores: TP (img 0), FP (img 1), TP (img 2) in dataset order.
    # The engine hands the records over in dataset order on any number of processes (test_metrics_processes.py).
    ds = _GT([_ann(i, [[0, 0, 10, 10]], [0]) for i in range(3)], ['a'])
    m = VOCMetric(ds)
    for i, box in enumerate(([0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10])):
        _feed(m, i, [box], [0.5], [0])
    assert m.compute()['mAP'] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)  # TP FP TP -> .556


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


def _touch_images(folder, coco):
    """The image files a COCO dict lists (the dataset checks they exist; the metric never reads them)."""
    for img in coco['images']:
        (folder / img['file_name']).write_bytes(b'')


def _coco_dataset(tmp_path, coco, **kwargs):
    (tmp_path / 'instances.json').write_text(json.dumps(coco))
    _touch_images(tmp_path, coco)
    return CocoDetection(str(tmp_path / 'instances.json'), str(tmp_path), **kwargs)


def _pycocotools_stats(coco, results):
    """pycocotools run directly on a ground-truth dict and a list of result dicts."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(coco))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), 'bbox')
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return list(ev.stats[:6])


def test_coco_metric_ranks_unrounded_scores():
    # image 1: no object of class 0, a false positive scored .500001; image 2: one object, a hit scored .500004.
    # Ranked as they are, the hit comes first (AP 1); rounded to 5 decimals both are .5 and the tie goes to
    # image 1 (pycocotools: image order, stable sort) -> AP .5.
    coco = {'images': [{'id': i, 'width': 100, 'height': 100, 'file_name': f'{i}.jpg'} for i in (1, 2)],
            'annotations': [{'id': 1, 'image_id': 2, 'category_id': 1, 'bbox': [10, 10, 40, 40], 'area': 1600,
                             'iscrowd': 0}],
            'categories': [{'id': 1, 'name': 'a'}]}
    ds = _GT([_ann(1, [], []), _ann(2, [[10, 10, 50, 50]], [0])], ['a'])
    m = CocoMetric(ds)
    _feed(m, 1, [[60, 60, 90, 90]], [0.500001], [0])
    _feed(m, 2, [[10, 10, 50, 50]], [0.500004], [0])
    assert m.compute()['AP50'] == pytest.approx(1.0)
    rounded = [{'image_id': 1, 'category_id': 1, 'bbox': [60, 60, 30, 30], 'score': 0.5},
               {'image_id': 2, 'category_id': 1, 'bbox': [10, 10, 40, 40], 'score': 0.5}]
    assert _pycocotools_stats(coco, rounded)[1] == pytest.approx(0.5)  # what rounding first gave
    assert [d['score'] for d in m.results_json()] == [0.5, 0.5]  # the results file is still rounded


def test_coco_metric_without_detections_reports_minus_one_where_undefined():
    # objects of 16x16 (small) and 110x110 (large) only: no medium ground truth -> APm undefined (-1), as in
    # pycocotools; the defined values are 0
    ds = _GT([_ann(1, [[0, 0, 16, 16], [20, 20, 130, 130]], [0, 0], size=(200, 200))], ['a'])
    m = CocoMetric(ds)
    _feed(m, 1, [], [], [])
    out = m.compute()
    assert [out[k] for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')] == [0.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    # the same numbers pycocotools gives with one far-away detection (it cannot load an empty result list)
    coco = {'images': [{'id': 1, 'width': 200, 'height': 200}], 'categories': [{'id': 1, 'name': 'a'}],
            'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 16, 16], 'area': 256,
                             'iscrowd': 0},
                            {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [20, 20, 110, 110], 'area': 12100,
                             'iscrowd': 0}]}
    ref = _pycocotools_stats(coco, [{'image_id': 1, 'category_id': 1, 'bbox': [190, 190, 5, 5], 'score': 0.1}])
    assert ref == [0.0, 0.0, 0.0, 0.0, -1.0, 0.0]


def test_coco_metric_class_absent_from_val_set(tmp_path):
    # the checkpoint knows classes ['cat', 'zebra', 'dog']; the val file has no 'zebra' category at all
    coco = _coco_gt()
    ds = _coco_dataset(tmp_path, coco, metainfo={'classes': ['cat', 'zebra', 'dog']})
    assert ds.cat_ids == [3, None, 7]
    label = {0: 0, 1: 2}  # the contiguous labels of _DETS (cat, dog) in the checkpoint's order
    m = CocoMetric(ds)
    for img_id in (1, 2, 3):
        dets = [d for d in _DETS if d[0] == img_id]
        _feed(m, img_id, [d[1] for d in dets] + [[0, 0, 50, 50]], [d[2] for d in dets] + [0.95],
              [label[d[3]] for d in dets] + [1])  # + one zebra per image, scored highest
    with pytest.warns(UserWarning, match=r"3 detection\(s\) of class\(es\) 'zebra' left out"):
        out = m.compute()
    # pycocotools evaluates only the ground truth's categories: the same as the detections without the zebras
    ref = _pycocotools_stats(coco, [{'image_id': i, 'category_id': [3, 7][lab], 'score': s,
                                     'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, b, s, lab in _DETS])
    assert [out[k] for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')] == pytest.approx(ref)
    with pytest.warns(UserWarning, match='zebra'):
        assert {d['category_id'] for d in m.results_json()} == {3, 7}


# (image id, xyxy, score, contiguous label)
_DETS = [(1, [11, 9, 41, 31], .9, 0), (1, [52, 41, 88, 69], .8, 1), (1, [10, 10, 40, 30], .3, 1),
         (2, [5, 6, 12, 13], .7, 0), (2, [30, 30, 60, 60], .6, 1), (3, [25, 20, 80, 70], .85, 1),
         (3, [0, 0, 20, 20], .4, 0)]


def test_coco_metric_equals_direct_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann_file = tmp_path / 'instances.json'
    ann_file.write_text(json.dumps(_coco_gt()))
    _touch_images(tmp_path, _coco_gt())
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
