"""Classification-head benchmark: parameters and forward (or forward+backward) time of every head.

::

    python tools/benchmark.py cls_heads                                  # C=512, K=1000, 7x7, N=8, forward
    python tools/benchmark.py cls_heads --channels 256 --size 64 --batch 2 --backward   # the cost of attnpool vs GAP
    python tools/benchmark.py cls_heads --heads linear attnpool --dtype bfloat16 --device cuda

Heads are built with their defaults (``attnpool`` with ``feat_size`` = the input size). Time: median and
min of ``--repeats`` passes after ``--warmup`` passes, under ``torch.no_grad()`` for forward only. The
machine's load average is printed: figures from a loaded machine are indicative only.
"""
from __future__ import annotations

import argparse
import os

from .timing import time_call

__all__ = ['main']

NAMES = ('linear', 'attnpool', 'class_attention', 'ml_decoder')


def main(argv: list[str]) -> int:
    import torch

    from ..registry import HEADS, build

    parser = argparse.ArgumentParser(prog='attnkit bench cls_heads', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--heads', nargs='+', default=list(NAMES), choices=NAMES)
    parser.add_argument('--channels', type=int, default=512)
    parser.add_argument('--classes', type=int, default=1000)
    parser.add_argument('--size', type=int, default=7, help='feature map H = W')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--backward', action='store_true', help='time forward + backward instead of forward')
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=args.device, dtype=dtype)
    mode = 'forward+backward' if args.backward else 'forward'
    print(f'# classification heads: N={args.batch}, C={args.channels}, K={args.classes}, {args.size}x{args.size}, '
          f'{args.dtype}, {args.device}, {mode}, torch threads {torch.get_num_threads()}, '
          f"load average {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"| head | parameters | {mode} median ms | min ms |\n|---|---:|---:|---:|")
    for name in args.heads:
        cfg = dict(type=name, feat_size=args.size) if name == 'attnpool' else dict(type=name)
        torch.manual_seed(0)
        head = build(HEADS, cfg, in_channels=args.channels, num_classes=args.classes).to(args.device, dtype)
        params = sum(p.numel() for p in head.parameters())
        if args.backward:
            head.train()
            xg = x.detach().requires_grad_(True)

            def step() -> None:
                head(xg).float().square().mean().backward()
        else:
            head.eval()

            def step() -> None:
                with torch.no_grad():
                    head(x)
        median, best = time_call(step, args.device, args.warmup, args.repeats)
        print(f'| {name} | {params / 1e6:.2f} M | {median:.2f} | {best:.2f} |')
    return 0
