"""Time ``explain`` (all views of one image) on the demo models: ``python -m attnkit.explain.bench``.

Without checkpoints the demo detector and segmentor are built at their configured size with random weights (the
time does not depend on the weights, only the pictures do); ``--checkpoint CONFIG=CKPT`` uses trained ones (VQA
needs a checkpoint: its vocabularies live there). Prints, per model, the wall and CPU seconds per image (median of
``--images`` images after one warm-up image that pays the imports).
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
from typing import Sequence

import torch

DEFAULT_CONFIGS = ('configs/demo/fcos_r18-cbam_fpn_shapes.py', 'configs/demo/danet_r18-d8_shapes.py')


def main(argv: Sequence[str] | None = None) -> int:
    from ..builder import build_model
    from ..config import load_config
    from .run import explain_images, load_for_explain
    from .scorer import task_of
    p = argparse.ArgumentParser(prog='python -m attnkit.explain.bench', description=__doc__)
    p.add_argument('--checkpoint', action='append', default=[], metavar='CONFIG=CKPT')
    p.add_argument('--images', type=int, default=3)
    p.add_argument('--data', default='data/demo/voc/JPEGImages')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = [tuple(c.split('=', 1)) for c in args.checkpoint] or [(c, None) for c in DEFAULT_CONFIGS]
    images = sorted(glob.glob(os.path.join(args.data, '*.jpg')))[-(args.images + 1):]
    for config, ckpt in pairs:
        if ckpt:
            model, cfg = load_for_explain(config, ckpt)
        else:
            cfg = load_config(config)
            classes = ['circle', 'square', 'triangle', 'star']
            classes = classes if cfg.model.type == 'Detector' else ['background'] + classes
            torch.manual_seed(0)
            model = build_model(cfg.model, metainfo={'classes': classes}).eval()
        task = task_of(model, cfg)
        questions = ['what color is the circle?'] if task == 'vqa' else None
        with tempfile.TemporaryDirectory() as tmp:
            results = explain_images(model, images, tmp, task=task, cfg=cfg, questions=questions, html=False)
        wall = statistics.median(r['seconds'] for r in results[1:])
        cpu = statistics.median(r['cpu_seconds'] for r in results[1:])
        views = len(results[-1]['views'])
        print(f'{config}: {views} views per image, {wall:.2f} s wall, {cpu:.2f} s CPU per image '
              f'(median of {len(results) - 1}; {args.threads} threads; load {os.getloadavg()[0]:.1f})')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
