#!/usr/bin/env python
"""Wrapper overhead of TimmBackbone: forward + backward time against timm's own ``features_only`` model.

    python tools/bench_timm_backbone.py                       # ConvNeXt-T, 224x224, batch 2, CPU
    python tools/bench_timm_backbone.py --device cuda --repeats 50

Both models hold the same weights (copied through ``state_dict``); runs alternate between them so that drifting
machine load hits both alike. Prints the median time of each and their ratio (target <= 1.02), plus the load
average, because figures from a shared machine are indicative only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


def step_time(model, x, device: str) -> float:
    """Seconds of one forward + backward (sum of every output map) of ``model`` on ``x``."""
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    start = time.perf_counter()
    outs = model(x)
    sum(o.float().sum() for o in outs).backward()
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--model', default='convnext_tiny')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--out-indices', type=int, nargs='+', default=[0, 1, 2, 3])
    parser.add_argument('--repeats', type=int, default=15, help='timed runs of each model (median reported)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    args = parser.parse_args(argv)

    import timm
    import torch

    from attnkit.backbones import TimmBackbone

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out_indices = tuple(args.out_indices)
    reference = timm.create_model(args.model, features_only=True, out_indices=out_indices, pretrained=False)
    ours = TimmBackbone(args.model, out_indices=out_indices)
    ours.model.load_state_dict(reference.state_dict())
    reference.to(args.device).train()
    ours.to(args.device).train()
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    with torch.no_grad():
        same = max((a - b).abs().max().item() for a, b in zip(reference.eval()(x), ours.eval()(x)))
    reference.train(), ours.train()
    for _ in range(args.warmup):
        step_time(reference, x, args.device), step_time(ours, x, args.device)
    times: dict[str, list[float]] = {'timm': [], 'TimmBackbone': []}
    for i in range(args.repeats):
        order = (('timm', reference), ('TimmBackbone', ours)) if i % 2 == 0 else \
            (('TimmBackbone', ours), ('timm', reference))
        for name, model in order:
            times[name].append(step_time(model, x, args.device))
    med = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    print(f'{args.model} {args.batch}x3x{args.size}x{args.size} forward+backward on {args.device} '
          f'(torch threads {torch.get_num_threads()}, {args.repeats} runs each after {args.warmup} warm-up; '
          f'max |output difference| {same:.1e})')
    for name, values in times.items():
        print(f'  {name:>12}: median {med[name] * 1e3:8.1f} ms   (min {min(values) * 1e3:.1f}, '
              f'max {max(values) * 1e3:.1f})')
    print(f'  ratio TimmBackbone / timm: {med["TimmBackbone"] / med["timm"]:.3f} (target <= 1.02)')
    if load:
        print(f'  load average (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs')
    return 0


if __name__ == '__main__':
    sys.exit(main())
