"""Time of one training step of each config's model on one fixed batch of its own training data.

::

    attnkit bench train_step configs/demo/cls_r18_shapes.py configs/demo/cls_r18-lip_shapes.py --threads 1

For each config: the training dataset and the model are built as the Trainer builds them, the first
``batch_size`` samples (the config's ``data.train.batch_size`` unless ``--batch``) are collated once, and one step
is ``loss = model(batch)['loss']; loss.backward(); optimizer.step(); optimizer.zero_grad()`` with the config's
optimizer. Median and min over ``--iters`` steps after ``--warmup`` steps; data loading is not included (it is
the same for every variant of an ablation). This is what an ablation's "time per step" should compare: run on a
quiet machine (the load average is printed with the table), one config after another in one process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

__all__ = ['main', 'step_times']


def step_times(config: str, iters: int, warmup: int, batch: int | None, seed: int = 0) -> dict:
    """``{'config', 'params', 'batch', 'median_ms', 'min_ms'}`` of one config (see the module docstring)."""
    import torch

    from .. import build_dataset, build_model
    from ..config import load_config
    from ..engine.optim import build_optimizer
    from ..engine.utils import DEFAULT_OPTIM, section

    cfg = load_config(config)
    torch.manual_seed(seed)
    dataset = build_dataset(cfg['data']['train']['dataset'])
    model = build_model(cfg['model'], metainfo=getattr(dataset, 'metainfo', None)).train()
    optimizer = build_optimizer(model, section(cfg, 'optim', DEFAULT_OPTIM))
    size = batch or int(cfg['data']['train'].get('batch_size', 2))
    collate = getattr(dataset, 'collate', None)
    if collate is None:
        from ..data import collate
    samples = [dataset[i % len(dataset)] for i in range(size)]
    data = collate(samples)
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        loss = model(data)['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return {'config': config, 'params': sum(p.numel() for p in model.parameters()), 'batch': size,
            'median_ms': statistics.median(times), 'min_ms': min(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='attnkit bench train_step', description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--batch', type=int, default=None, help="default: the config's data.train.batch_size")
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    args = parser.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [step_times(c, args.iters, args.warmup, args.batch) for c in args.configs]
    base = rows[0]['median_ms']
    print(f'load average {os.getloadavg()[0]:.2f}; threads {torch.get_num_threads()}; '
          f'{args.iters} steps after {args.warmup} warm-up steps')
    print('| config | params (M) | batch | ms / step (median) | min | x first |')
    print('|---|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f"| {Path(r['config']).stem} | {r['params'] / 1e6:.2f} | {r['batch']} | {r['median_ms']:.0f} | "
              f"{r['min_ms']:.0f} | {r['median_ms'] / base:.2f} |")
    return 0
