"""Run VOC, COCO, mIoU and VQA metrics through ``attnkit.engine.evaluate`` (1 process, or N under accelerate
launch) on fixed predictions, and write each process's metrics to ``OUT_DIR/rank<r>.json``.

Used by tests/test_metrics_processes.py: ``python metrics_processes_run.py OUT_DIR``. The predictions depend on
the sample only (never on the batch or the process), so every difference between runs is the engine's doing.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from torch import nn

# 7 images (odd: not divisible by 2 processes), one object of class 0 each; one detection per image, all with
# the same score: a hit (TP) or a miss (FP) in this dataset order
HITS = [True, False, True, False, True, True, False]
GT_BOX = [10.0, 10.0, 40.0, 40.0]
MISS_BOX = [60.0, 60.0, 90.0, 90.0]
# segmentation: 7 label maps 4x5 (ignore 255 in places) and predictions, 3 classes
SEG_GT = [np.random.default_rng(i).integers(0, 3, (4, 5)) for i in range(7)]
for _k, _g in enumerate(SEG_GT):
    _g[0, _k % 5] = 255
SEG_PRED = [np.random.default_rng(100 + i).integers(0, 3, (4, 5)) for i in range(7)]
# VQA: 7 questions, (ten answers, predicted answer)
VQA = [(['yes'] * 10, 'yes'), (['a'] * 2 + ['b'] * 8, 'a'), (['2'] * 10, 'two'), (['red'] * 3 + ['blue'] * 7, 'red'),
       (['no'] * 10, 'yes'), (['cat'] * 1 + ['dog'] * 9, 'cat'), (['two'] * 4 + ['3'] * 6, '2')]


class Samples:
    """``len`` 7; ``__getitem__`` → a tiny sample dict; detection, segmentation and VQA ground truth."""

    classes = ['thing']
    metainfo = {'classes': ['a', 'b', 'c']}

    def __len__(self) -> int:
        return len(HITS)

    def __getitem__(self, i: int) -> dict:
        return {'image': torch.zeros(3, 4, 5), 'mask': torch.from_numpy(SEG_GT[i]).long(),
                'meta': {'id': i, 'img_size': (4, 5), 'question_id': 1000 + i}}

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        return {'images': torch.stack([s['image'] for s in samples]),
                'masks': torch.stack([s['mask'] for s in samples]), 'metas': [s['meta'] for s in samples]}

    def get_ann_info(self, i: int) -> dict:
        return {'id': i, 'boxes': np.array([GT_BOX], np.float32), 'labels': np.array([0]),
                'ignore': np.array([False]), 'width': 100, 'height': 100}

    def get_ground_truth(self, question_id: int):
        return VQA[question_id - 1000][0], 'other'


class FixedModel(nn.Module):
    """Predictions looked up by sample id: detection, segmentation or VQA."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict) -> list[dict]:
        dev = batch['images'].device
        out = []
        for meta in batch['metas']:
            i = meta['id']
            if self.kind == 'detection':
                out.append({'boxes': torch.tensor([GT_BOX if HITS[i] else MISS_BOX], device=dev),
                            'scores': torch.tensor([0.5], device=dev), 'labels': torch.tensor([0], device=dev)})
            elif self.kind == 'segmentation':
                out.append({'sem_seg': torch.from_numpy(SEG_PRED[i]).long().to(dev)})
            else:
                out.append({'question_id': meta['question_id'], 'answer': VQA[i][1]})
        return out


def main(out_dir: str) -> None:
    from accelerate import Accelerator

    from attnkit.engine.evaluate import evaluate
    from attnkit.evaluation import CocoMetric, IoUMetric, VOCMetric
    from attnkit.evaluation.vqa import VQAAccuracy

    accelerator = Accelerator()
    ds = Samples()
    out, calls = {}, {}
    for name, kind, evaluator in (('voc', 'detection', VOCMetric(ds)), ('coco', 'detection', CocoMetric(ds)),
                                  ('miou', 'segmentation', IoUMetric(ds)), ('vqa', 'vqa', VQAAccuracy(ds))):
        calls[name] = 0
        compute = evaluator.compute

        def counted(compute=compute, name=name):
            calls[name] += 1
            return compute()
        evaluator.compute = counted
        out[name] = evaluate(FixedModel(kind), ds, evaluator, accelerator, batch_size=2)
        if name == 'voc':
            out['voc_record_ids'] = [r['img_id'] for r in evaluator.results]
        if name == 'miou':
            out['miou_samples'] = evaluator.num_samples()
            out['miou_confusion'] = evaluator._total().tolist()
    result = {'rank': accelerator.process_index, 'world': accelerator.num_processes, 'metrics': out,
              'compute_calls': calls}
    with open(os.path.join(out_dir, f'rank{accelerator.process_index}.json'), 'w') as f:
        json.dump(result, f)
    accelerator.end_training()


if __name__ == '__main__':
    main(sys.argv[1])
