"""Detection benchmarks.

``speed``: one training step and one inference (with post-processing) of FCOS R50-FPN at SIZE x SIZE, batch B,
attnkit (plain and CBAM ResNet-50) side by side with ``torchvision.models.detection.fcos_resnet50_fpn`` in the
same process, runs interleaved so that machine load hits every model alike; fp32 rows and (``--bf16``) bf16
autocast rows. Median seconds per call, wall and process CPU time (CPU time is barely disturbed by other
processes on a shared machine).

``quality``: train the demo config from scratch and evaluate it (COCO mAP on the demo val split), with the wall
time and the machine load (``uptime``) before and after.

Run ``python tools/benchmark.py detection speed --size 512 --batch 2 --iters 3`` or
``python tools/benchmark.py detection quality``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from typing import Any, Callable

import torch

__all__ = ['main']

NUM_CLASSES = 91  # torchvision's default COCO head


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return 'uptime unavailable'


def _targets(batch: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(batch):
        xy = torch.rand(5, 2, generator=g) * size * 0.7
        wh = 16 + torch.rand(5, 2, generator=g) * size * 0.3
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size)], 1))
        labels.append(torch.randint(0, NUM_CLASSES - 1, (5,), generator=g))
    return boxes, labels


def _torchvision_runner(size: int, batch: int, bf16: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    from torchvision.models.detection import fcos_resnet50_fpn
    model = fcos_resnet50_fpn(weights=None, weights_backbone=None, min_size=size, max_size=size)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(batch)]
    boxes, labels = _targets(batch, size)
    targets = [{'boxes': b, 'labels': l + 1} for b, l in zip(boxes, labels)]

    def train() -> None:
        model.train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            losses = model(images, targets)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            model(images)
    return train, infer


def _attnkit_runner(size: int, batch: int, bf16: bool, attention: str | None, channels_last: bool
                    ) -> tuple[Callable[[], None], Callable[[], None]]:
    from .. import build_model
    att = None if attention is None else dict(type=attention, stages=(False, True, True, True))
    cfg = dict(type='Detector',
               backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), attention=att),
               neck=dict(type='FPN', out_channels=256, num_outs=5, start_level=1, add_extra_convs='on_output',
                         relu_before_extra_convs=True),
               # torchvision's FCOS test settings, so that post-processing does the same work
               head=dict(type='FCOSHead', feat_channels=256, stacked_convs=4, score_thr=0.2, nms_pre=1000,
                         iou_thr=0.6, max_per_img=100))
    model = build_model(cfg, metainfo={'classes': [f'c{i}' for i in range(NUM_CLASSES)]})
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    # the same pixels as torchvision's float images, as the uint8 batch attnkit's collate gives (model normalises)
    images = torch.stack([(torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) * 255).round()
                          .to(torch.uint8) for i in range(batch)])
    boxes, labels = _targets(batch, size)
    meta = {'ori_size': (size, size), 'img_size': (size, size), 'scale_factor': (1.0, 1.0)}
    batch_dict = {'images': images, 'boxes': boxes, 'labels': labels,
                  'ignore': [torch.zeros(len(b), dtype=torch.bool) for b in boxes], 'metas': [dict(meta)] * batch}

    def train() -> None:
        model.train()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            losses = model(batch_dict)
        losses['loss'].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer() -> None:
        model.eval()
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            model(batch_dict)
    return train, infer


def speed(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    precisions = ['fp32'] + (['bf16'] if args.bf16 else [])
    if args.only_bf16:
        precisions = ['bf16']
    rows: dict[str, dict[str, Any]] = {}
    load_before = _uptime()
    for prec in precisions:
        bf16 = prec == 'bf16'
        runners = {f'torchvision fcos_resnet50_fpn {prec}': _torchvision_runner(args.size, args.batch, bf16),
                   f'attnkit FCOS R50-FPN {prec} channels_last': _attnkit_runner(args.size, args.batch, bf16, None, True),
                   f'attnkit FCOS R50-CBAM-FPN {prec} channels_last': _attnkit_runner(args.size, args.batch, bf16,
                                                                                     'cbam', True)}
        if args.nchw:
            runners[f'attnkit FCOS R50-FPN {prec} NCHW'] = _attnkit_runner(args.size, args.batch, bf16, None, False)
        times = {name: {'train': [], 'infer': [], 'train_cpu': [], 'infer_cpu': []} for name in runners}
        for name, (train, infer) in runners.items():  # warm-up (allocations, oneDNN primitive caches)
            for _ in range(args.warmup):
                train(), infer()
        for _ in range(args.iters):  # interleaved: load changes hit all models alike
            for name, (train, infer) in runners.items():
                for what, fn in (('train', train), ('infer', infer)):
                    t, c = time.perf_counter(), time.process_time()
                    fn()
                    times[name][what].append(time.perf_counter() - t)
                    times[name][what + '_cpu'].append(time.process_time() - c)
        med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
        ref = med[f'torchvision fcos_resnet50_fpn {prec}']
        for name, m in med.items():
            rows[name] = {**{f'{k}_s': round(v, 3) for k, v in m.items()},
                          **{f'{k}_ratio_vs_torchvision': round(v / ref[k], 3) for k, v in m.items()},
                          'train_all_s': [round(v, 3) for v in times[name]['train']],
                          'infer_all_s': [round(v, 3) for v in times[name]['infer']]}
        plain = med[f'attnkit FCOS R50-FPN {prec} channels_last']
        cbam = med[f'attnkit FCOS R50-CBAM-FPN {prec} channels_last']
        rows[f'CBAM overhead {prec}'] = {k: round(cbam[k] / plain[k] - 1, 3) for k in plain}
    return {'benchmark': 'detection speed', 'size': args.size, 'batch': args.batch, 'iters': args.iters,
            'threads': torch.get_num_threads(), 'uptime_before': load_before, 'uptime_after': _uptime(),
            'rows': rows}


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from .. import build_dataset, build_evaluator, load_config
    from ..engine import Trainer, evaluate, load_model
    cfg = load_config(args.config)
    work_dir = args.work_dir or os.path.join('work_dirs', 'bench_detection_quality')
    load_before = _uptime()
    t0 = time.time()
    cpu0 = time.process_time()
    trainer = Trainer(cfg, work_dir=work_dir)
    trainer.train()
    train_s = time.time() - t0
    load_mid = _uptime()
    ckpt = os.path.join(work_dir, 'latest.pth')
    model = load_model(cfg, ckpt)
    if (cfg.get('runtime') or {}).get('channels_last', True):
        model = model.to(memory_format=torch.channels_last)
    part = cfg.data.get('test') or cfg.data.val
    dataset = build_dataset(part['dataset'], metainfo=model.metainfo)
    evaluator = build_evaluator(cfg.evaluator, dataset=dataset)
    t1 = time.time()
    metrics = evaluate(model, dataset, evaluator, trainer.accelerator, batch_size=int(part.get('batch_size', 1)),
                       num_workers=0, channels_last=True, progress=False)
    return {'benchmark': 'detection quality', 'config': args.config, 'train_wall_s': round(train_s, 1),
            'test_wall_s': round(time.time() - t1, 1), 'main_process_cpu_s': round(time.process_time() - cpu0, 1),
            'uptime_before': load_before, 'uptime_after_train': load_mid, 'uptime_after': _uptime(),
            'metrics': {k: round(float(v), 4) for k, v in metrics.items()}, 'per_class': evaluator.summary()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='attnkit bench detection', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='what', required=True)
    p = sub.add_parser('speed', help='FCOS R50-FPN train step / inference against torchvision')
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--bf16', action='store_true', help='also bf16 autocast rows')
    p.add_argument('--only-bf16', action='store_true', help='only the bf16 autocast rows')
    p.add_argument('--nchw', action='store_true', help='also an attnkit row without channels_last')
    p.add_argument('--threads', type=int, default=None)
    q = sub.add_parser('quality', help='train + test the demo detector')
    q.add_argument('--config', default='configs/demo/fcos_r18-cbam_fpn_shapes.py')
    q.add_argument('--work-dir', default=None)
    parser.add_argument('--out', help='also write the result JSON here')
    args = parser.parse_args(argv)
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    result = speed(args) if args.what == 'speed' else quality(args)
    per_class = result.pop('per_class', None)
    text = json.dumps(result, indent=2)
    print(text)
    if per_class:
        print(per_class)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return 0
