"""Downsampler benchmark: the cost of attention-guided downsampling, per module and in a ResNet.

::

    attnkit bench pooling                                   # modules at N=2, C=256, 64x64, forward+backward
    attnkit bench pooling --resnet --depth 50 --size 224 --batch 1      # ResNet-50 plain vs downsample=...
    attnkit bench pooling --types avg lip --dtype bfloat16 --device cuda

Modules (``--resnet`` off): every ``--types`` downsampler built for ``--channels``, timed forward+backward
(forward only with ``--forward``) on (``--batch``, C, ``--size``, ``--size``); ``max`` is
``F.max_pool2d(x, 3, 2, 1)`` for reference. ResNet (``--resnet``): ``ResNet(depth)`` plain and with
``downsample=dict(type=t)`` for each type, forward under ``torch.no_grad()`` in eval mode, parameters counted.
Time: median and min of ``--repeats`` passes after ``--warmup``. The load average is printed: figures from a
loaded machine are indicative only.
"""
from __future__ import annotations

import argparse
import os

from .timing import time_call

__all__ = ['main']

TYPES = ('max', 'avg', 'softpool', 'lip', 'guided')


def _module_rows(args, torch, dtype) -> list[tuple[str, int, float, float]]:
    import torch.nn.functional as F

    from ..builder import build_pooling

    rows = []
    for name in args.types:
        m = torch.nn.Identity() if name == 'max' else build_pooling(name, args.channels)
        m = m.to(args.device, dtype)
        x = torch.randn(args.batch, args.channels, args.size, args.size, device=args.device, dtype=dtype,
                        requires_grad=not args.forward)
        step = (lambda: F.max_pool2d(x, 3, 2, 1)) if name == 'max' else (lambda: m(x))
        if args.forward:
            def fn(step=step):
                with torch.no_grad():
                    step()
        else:
            def fn(step=step):
                step().float().square().mean().backward()
        params = sum(p.numel() for p in m.parameters())
        rows.append((name, params, *time_call(fn, args.device, args.warmup, args.repeats)))
    return rows


def _resnet_rows(args, torch, dtype) -> list[tuple[str, int, float, float]]:
    from ..backbones.resnet import ResNet

    rows = []
    for name in ('plain', *[t for t in args.types if t != 'max']):
        model = ResNet(args.depth, downsample=None if name == 'plain' else dict(type=name))
        model = model.to(args.device, dtype).eval()
        x = torch.randn(args.batch, 3, args.size, args.size, device=args.device, dtype=dtype)

        def fn(model=model, x=x):
            with torch.no_grad():
                model(x)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, params, *time_call(fn, args.device, args.warmup, args.repeats)))
    return rows


def main(argv: list[str]) -> int:
    import torch

    parser = argparse.ArgumentParser(prog='attnkit bench pooling', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--types', nargs='+', default=list(TYPES), choices=TYPES)
    parser.add_argument('--resnet', action='store_true', help='time a whole ResNet instead of the modules')
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--size', type=int, default=None, help='H = W (default 64 for modules, 224 for --resnet)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--forward', action='store_true', help='modules: forward only')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size is None:
        args.size = 224 if args.resnet else 64
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    if args.resnet:
        what = f'ResNet-{args.depth} forward, N={args.batch}, {args.size}x{args.size}'
        rows = _resnet_rows(args, torch, dtype)
    else:
        mode = 'forward' if args.forward else 'forward+backward'
        what = f'downsamplers {mode}, N={args.batch}, C={args.channels}, {args.size}x{args.size}'
        rows = _module_rows(args, torch, dtype)
    print(f'{what}, {args.dtype}, {args.device}, {torch.get_num_threads()} threads, load average {load:.1f}')
    base = rows[0][2]
    print(f"{'type':<10} {'params':>12} {'median ms':>10} {'min ms':>9} {'x ' + rows[0][0]:>9}")
    for name, params, med, low in rows:
        print(f'{name:<10} {params:>12,} {med:>10.2f} {low:>9.2f} {med / base:>9.2f}')
    return 0
