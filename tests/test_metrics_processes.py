"""Metrics do not depend on the number of processes: VOC, COCO, mIoU and VQA through the real evaluate() loop on
1 and 2 CPU processes (accelerate launch, gloo), tied scores included; IoUMetric's state does not grow."""
import json
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import metrics_processes_run as run
from attnkit.evaluation import IoUMetric

TESTS = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(TESTS, 'metrics_processes_run.py')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run(out_dir, processes: int) -> list[dict]:
    os.makedirs(out_dir)
    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS='1', NO_ALBUMENTATIONS_UPDATE='1',
               HF_HUB_OFFLINE='1', PYTHONPATH=TESTS + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if processes == 1:  # the same script's main() in this process (a fresh interpreter costs ~7 s of imports)
        from accelerate.state import AcceleratorState, GradientState
        AcceleratorState._reset_state()  # an earlier Trainer in this process may have used another precision
        GradientState._reset_state()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv('ACCELERATE_USE_CPU', '1')
            run.main(str(out_dir))
        AcceleratorState._reset_state()
        GradientState._reset_state()
    else:
        cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', str(processes),
               '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
               '--main_process_port', str(_free_port()), SCRIPT, str(out_dir)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out_dir / f'rank{r}.json').read_text()) for r in range(processes)]


def _reference_confusion() -> np.ndarray:
    cm = np.zeros((3, 3), np.int64)
    for gt, pred in zip(run.SEG_GT, run.SEG_PRED):
        keep = gt != 255
        np.add.at(cm, (gt[keep], pred[keep]), 1)
    return cm


def test_metrics_identical_on_one_and_two_processes(tmp_path):
    one = _run(tmp_path / 'one', 1)
    two = _run(tmp_path / 'two', 2)
    m1, m2 = one[0]['metrics'], two[0]['metrics']
    # identical numbers, and the second process got the main process's numbers (broadcast) ...
    assert json.dumps(m1, sort_keys=True) == json.dumps(m2, sort_keys=True)
    assert json.dumps(two[1]['metrics'], sort_keys=True) == json.dumps(m2, sort_keys=True)
    # ... computed once, on the main process only
    assert one[0]['compute_calls'] == two[0]['compute_calls'] == {'voc': 1, 'coco': 1, 'miou': 1, 'vqa': 1}
    assert two[1]['compute_calls'] == {'voc': 0, 'coco': 0, 'miou': 0, 'vqa': 0}
    # records back in dataset order on every process
    assert m2['voc_record_ids'] == two[1]['metrics']['voc_record_ids'] == list(range(7))

    # VOC, equal scores ranked in dataset order: TP FP TP FP TP TP FP of 7 objects. Precision envelope:
    # 1 at recall 1/7, then max(2/3, 3/5, 4/6) = 2/3 at recalls 2/7..4/7 -> AP = (1 + 3 * 2/3) / 7 = 3/7.
    # (Records concatenated per process, 0,2,4,6 | 1,3,5: TP TP TP FP FP FP TP -> 3/7 + 1/7 * 4/7 = .510.)
    assert m2['voc']['mAP'] == pytest.approx(3 / 7)
    # COCO: pycocotools on the same detections, run directly; IoU of a hit is 1, a miss 0
    assert m2['coco']['AP50'] == pytest.approx(_coco_reference_ap50())
    # mIoU: the summed confusion matrix is the one counted directly over all 7 images
    cm = _reference_confusion()
    assert np.array_equal(np.array(m2['miou_confusion']), cm) and m2['miou_samples'] == 7
    tp, union = np.diag(cm), cm.sum(0) + cm.sum(1) - np.diag(cm)
    assert m2['miou']['mIoU'] == pytest.approx(float(np.mean(tp / union)))
    assert m2['miou']['aAcc'] == pytest.approx(tp.sum() / cm.sum())
    # VQA by hand: 1, (2*1/3 + 8*2/3)/10 = .6, 0 ('two' vs unanimous '2': raw), (3*2/3 + 7)/10 = .9, 0,
    # (1*0 + 9*1/3)/10 = .3, 1 ('two' -> '2' when not unanimous)
    assert m2['vqa']['accuracy'] == pytest.approx((1 + 0.6 + 0 + 0.9 + 0 + 0.3 + 1) / 7)


def _coco_reference_ap50() -> float:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO()
    x1, y1, x2, y2 = run.GT_BOX
    gt.dataset = {'images': [{'id': i + 1, 'width': 100, 'height': 100} for i in range(7)],
                  'annotations': [{'id': i + 1, 'image_id': i + 1, 'category_id': 1, 'bbox': [x1, y1, x2 - x1, y2 - y1],
                                   'area': (x2 - x1) * (y2 - y1), 'iscrowd': 0} for i in range(7)],
                  'categories': [{'id': 1, 'name': 'thing'}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        res = []
        for i, hit in enumerate(run.HITS):
            b = run.GT_BOX if hit else run.MISS_BOX
            res.append({'image_id': i + 1, 'category_id': 1, 'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        'score': 0.5})
        ev = COCOeval(gt, gt.loadRes(res), 'bbox')
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return float(ev.stats[1])


def test_iou_metric_state_does_not_grow_with_images():
    def state_bytes(metric):
        return len(pickle.dumps({k: v for k, v in vars(metric).items() if k != 'dataset'}))

    gt = torch.randint(0, 150, (32, 48))
    gt[:2] = 255
    sizes, metric = [], IoUMetric(num_classes=150)
    batch = {'metas': [{'img_size': (32, 48)}], 'masks': gt[None]}
    for n in range(1, 41):
        metric.process(batch, [{'sem_seg': torch.randint(0, 150, (32, 48))}])
        if n in (1, 40):
            sizes.append(state_bytes(metric))
    assert metric.results == [] and metric.num_samples() == 40
    assert sizes[0] == sizes[1]  # one K x K matrix per process, not one per image
    state = metric.sum_state()
    assert state['confusion'].shape == (150, 150) and int(state['confusion'].sum()) == 40 * 30 * 48
