"""Benchmark: how long the shapes demo data takes to generate, and what it holds.

``python tools/benchmark.py demodata [--num-train 1000] [--num-val 200] [--size 128] [--repeat 1]``
generates into a temporary folder (deleted afterwards) and prints wall time, images per second, the
machine load, and the per-split counts; it also checks that two generations are byte-identical.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import tempfile
import time

__all__ = ['main']


def main(argv: list[str]) -> int:
    from ..data.demo import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, generate_demo_data

    parser = argparse.ArgumentParser(prog='attnkit bench demodata', description=__doc__)
    parser.add_argument('--num-train', type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument('--num-val', type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--repeat', type=int, default=2, help='generations to time (>= 2 also checks determinism)')
    args = parser.parse_args(argv)
    n = args.num_train + args.num_val
    with tempfile.TemporaryDirectory() as tmp:
        roots, times = [], []
        for r in range(args.repeat):
            root = os.path.join(tmp, f'run{r}')
            start = time.perf_counter()
            generate_demo_data(root, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed)
            times.append(time.perf_counter() - start)
            roots.append(root)
        with open(os.path.join(roots[0], 'meta.json'), encoding='utf-8') as f:
            counts = json.load(f)['counts']
        identical = None
        if len(roots) > 1:
            names = [os.path.relpath(os.path.join(d, f), roots[0]) for d, _, fs in os.walk(roots[0]) for f in fs]
            _, mismatch, errors = filecmp.cmpfiles(roots[0], roots[1], names, shallow=False)
            identical = not mismatch and not errors
        size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(roots[0]) for f in fs) / 2 ** 20
    best = min(times)
    print(f'demodata: {n} images of {args.size}px, seed {args.seed}')
    print(f'  generation: best {best:.2f} s of {len(times)} ({n / best:.0f} images/s); all: '
          + ', '.join(f'{t:.2f}' for t in times))
    print(f'  on disk: {size_mb:.1f} MiB; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')
    if identical is not None:
        print(f'  byte-identical across runs: {identical}')
    for split, c in counts.items():
        print(f"  {split}: {c['images']} images, {c['objects']} objects {c['objects_per_class']}, "
              f"{c['questions']} questions {c['answer_types']}")
    return 0 if identical in (None, True) else 1
