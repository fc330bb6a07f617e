#!/usr/bin/env python
"""Ablation of attention on the demo classification split: configs x seeds, top-1 and time per step, one table.

Each run is ``python -m attnkit train CONFIG --work-dir WORK_ROOT/<config>/seed<S> --cfg-options runtime.seed=S
[your --cfg-options]`` in a subprocess; afterwards its ``log.jsonl`` gives the last evaluation's metric (``top1``)
and the training iterations' ``iter_time``, its ``model.safetensors`` the parameter count. The table (mean ± sample
standard deviation over the seeds) is printed and written as markdown to ``--out`` (raw numbers in ``<out>.json``).
A run whose work dir already holds a finished run with the same options is reused unless ``--force``.

Run it on a quiet machine (time per step is only comparable between runs that had the CPU/GPU to themselves)::

    attnkit data demo
    OMP_NUM_THREADS=2 python tools/ablate_classification.py --seeds 0 1 2 --out docs/bench/classification_ablation.md

A quick check that everything runs (1 seed, a few iterations; the numbers mean nothing)::

    python tools/ablate_classification.py --seeds 0 --work-root work_dirs/ablate_quick --out /tmp/ablate.md \\
        --cfg-options schedule.by_epoch=False schedule.max_iters=4 schedule.warmup_iters=1 \\
        train_cfg.eval_interval=4 train_cfg.checkpoint_interval=4
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ['', '-se', '-cbam', '-lip', '-attnpool', '-class_attention', '-ml_decoder']
DEFAULT_CONFIGS = [f'configs/demo/cls_r18{v}_shapes.py' for v in VARIANTS]


def read_run(work_dir: Path, metric: str) -> dict | None:
    """``{'metric', 'step_time', 'iters', 'params'}`` of a finished run in ``work_dir``, or None."""
    log, weights = work_dir / 'log.jsonl', work_dir / 'model.safetensors'
    if not log.is_file() or not weights.is_file():
        return None
    val, train = [], []
    with open(log, encoding='utf-8') as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            (val if rec.get('mode') == 'val' else train if rec.get('mode') == 'train' else []).append(rec)
    if not val or metric not in val[-1]:
        return None
    # the first logged interval holds the start-up (first batches, allocator warm-up): leave it out when there is more
    times = [r['iter_time'] for r in train if 'iter_time' in r]
    times = times[1:] if len(times) > 1 else times
    from safetensors import safe_open
    with safe_open(str(weights), framework='pt') as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return {'metric': float(val[-1][metric]), 'step_time': statistics.fmean(times) if times else float('nan'),
            'iters': int(val[-1].get('iter', 0)), 'params': int(params)}


def precise_bn_top1(config: str, work_dir: Path, num_batches: int, batch_size: int = 64, seed: int = 0) -> float:
    """Top-1 on the val split of the run's final weights after recomputing every BatchNorm's statistics
    (:func:`attnkit.engine.precise_bn.recalibrate_batchnorm`) over ``num_batches`` shuffled training batches taken
    through the val pipeline: what the weights can do without the lag of BatchNorm's running averages."""
    import random

    import torch

    from attnkit import build_dataset
    from attnkit.config import load_config
    from attnkit.engine import load_model
    from attnkit.engine.precise_bn import recalibrate_batchnorm

    cfg = load_config(config)
    model = load_model(cfg, str(work_dir / 'model.safetensors')).eval()
    val = build_dataset(cfg['data']['val']['dataset'], metainfo=model.metainfo)
    train_cfg = dict(cfg['data']['train']['dataset'])
    train_cfg['pipeline'] = cfg['data']['val']['dataset'].get('pipeline', [])
    train = build_dataset(train_cfg, metainfo=model.metainfo)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    batches = (train.collate([train[i] for i in order[s:s + batch_size]])
               for s in range(0, min(len(order), num_batches * batch_size), batch_size))
    recalibrate_batchnorm(model, batches)
    correct = 0
    with torch.no_grad():
        for s in range(0, len(val), batch_size):
            batch = val.collate([val[i] for i in range(s, min(s + batch_size, len(val)))])
            pred = torch.stack([p['label'] for p in model(batch)])
            correct += int((pred == batch['labels']).sum())
    return correct / len(val)


def mean_std(values: list[float], digits: int) -> str:
    if not values:
        return 'n/a'
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return f'{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}'


def table(results: dict[str, list[dict]], metric: str) -> str:
    precise = any(r and 'precise_bn_top1' in r for runs in results.values() for r in runs)
    extra = ' top-1 after precise BN (mean ± std) |' if precise else ''
    lines = [f'| config | params (M) | {metric} (mean ± std) |{extra} s / step (mean ± std) | seeds |',
             '|---|---:|---:|' + ('---:|' if precise else '') + '---:|---:|']
    for config, runs in results.items():
        name = Path(config).stem
        ok = [r for r in runs if r]
        params = f"{ok[0]['params'] / 1e6:.2f}" if ok else 'n/a'
        cell = f" {mean_std([r['precise_bn_top1'] for r in ok if 'precise_bn_top1' in r], 4)} |" if precise else ''
        lines.append(f"| {name} | {params} | {mean_std([r['metric'] for r in ok], 4)} |{cell} "
                     f"{mean_std([r['step_time'] for r in ok], 3)} | {len(ok)} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS, help='configs to compare (first = baseline)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--work-root', default='work_dirs/ablate_classification')
    parser.add_argument('--out', default='work_dirs/ablate_classification/ablation.md', help='markdown table file')
    parser.add_argument('--metric', default='top1', help='metric of the last evaluation to compare')
    parser.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                        help='passed to every run after runtime.seed=S (e.g. schedule.max_epochs=4)')
    parser.add_argument('--force', action='store_true', help='train again even where a finished run exists')
    parser.add_argument('--precise-bn', type=int, default=0, metavar='N',
                        help='also report top-1 after recomputing BatchNorm statistics over N training batches')
    args = parser.parse_args(argv)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    results: dict[str, list[dict]] = {}
    raw = []
    for config in args.configs:
        results[config] = []
        for seed in args.seeds:
            work = Path(args.work_root) / Path(config).stem / f'seed{seed}'
            options = [f'runtime.seed={seed}', 'runtime.tensorboard=False', *args.cfg_options]
            stamp = work / 'ablate_options.json'
            same = stamp.is_file() and json.loads(stamp.read_text()) == options
            run = read_run(work, args.metric) if same and not args.force else None
            if run is None:
                cmd = [sys.executable, '-m', 'attnkit', 'train', config, '--work-dir', str(work),
                       '--cfg-options', *options]
                print('$ ' + ' '.join(cmd), flush=True)
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    tail = '\n'.join(proc.stdout.strip().splitlines()[-5:])
                    print(f'  FAILED (exit {proc.returncode}) after {wall:.0f} s:\n{tail}', flush=True)
                    results[config].append(None)
                    continue
                work.mkdir(parents=True, exist_ok=True)
                stamp.write_text(json.dumps(options))
                run = read_run(work, args.metric)
                if run is None:
                    print(f'  no {args.metric!r} evaluation in {work}/log.jsonl', flush=True)
                    results[config].append(None)
                    continue
                run['wall_s'] = round(wall, 1)
            if args.precise_bn:
                run['precise_bn_top1'] = precise_bn_top1(config, work, args.precise_bn, seed=seed)
                print(f"  {Path(config).stem} seed {seed}: top-1 after precise BN {run['precise_bn_top1']:.4f}")
            print(f"  {Path(config).stem} seed {seed}: {args.metric}={run['metric']:.4f}, "
                  f"{run['step_time']:.3f} s/step, {run['iters']} iterations", flush=True)
            results[config].append(run)
            raw.append({'config': config, 'seed': seed, **run})
    text = table(results, args.metric)
    header = (f"Seeds {args.seeds}; options {' '.join(args.cfg_options) or '(none)'}; "
              f'time per step = mean logged iter_time after the first log interval.\n\n')
    print('\n' + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text + '\n')
    out.with_suffix(out.suffix + '.json').write_text(json.dumps(raw, indent=1))
    print(f'\nwrote {out} and {out}.json')
    return 0 if all(r for runs in results.values() for r in runs) else 1


if __name__ == '__main__':
    raise SystemExit(main())
