"""Pre-train -> fine-tune on the demo: does a backbone pre-trained by classification help the demo detector?

For each seed S in 0..N-1 it runs, as subprocesses (``python -m attnkit train CONFIG --work-dir ...
--cfg-options runtime.seed=S ...``):

1. the classifier (``configs/demo/cls_r18-cbam_shapes.py``: half-width ResNet-18 + CBAM on the demo classification
   split) -> ``<root>/cls_sS``;
2. the demo detector fine-tuned from that classifier's checkpoint
   (``configs/demo/fcos_r18-cbam_fpn_shapes_from-cls.py`` with ``model.backbone.pretrained=<root>/cls_sS/best.pth``)
   -> ``<root>/finetune_sS``;
3. the same detector from scratch (``configs/demo/fcos_r18-cbam_fpn_shapes.py``) -> ``<root>/scratch_sS``;

then prints a markdown table of the detection AP (mean +- std over the seeds; the final evaluation in each run's
``log.jsonl``) with the wall time of each arm, pre-training included for the fine-tuned arm, and writes it with the
per-seed figures to ``<root>/summary.json``. A run whose ``log.jsonl`` already holds its final evaluation and
whose ``done.json`` exists is not trained again unless ``--force``.

Usage::

    python tools/pretrain_finetune_demo.py --seeds 3                 # the comparison (about an hour on 2 CPUs)
    python tools/pretrain_finetune_demo.py --seeds 1 --quick         # a set-up check: one epoch per run
    python tools/pretrain_finetune_demo.py --finetune-epochs 6       # fine-tune shorter: equal total time

Run it on a quiet machine with ``OMP_NUM_THREADS`` set to the cores it may use: the wall times are the point.
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
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSIFIER = 'configs/demo/cls_r18-cbam_shapes.py'
FINETUNE = 'configs/demo/fcos_r18-cbam_fpn_shapes_from-cls.py'
SCRATCH = 'configs/demo/fcos_r18-cbam_fpn_shapes.py'
QUICK_OPTIONS = ['schedule.max_epochs=1', 'schedule.warmup_iters=5', 'train_cfg.eval_interval=1',
                 'train_cfg.checkpoint_interval=1']


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    p.add_argument('--seeds', type=int, default=3, help='number of seeds (0..N-1); default 3')
    p.add_argument('--classifier-config', default=CLASSIFIER, help=f'default {CLASSIFIER}')
    p.add_argument('--finetune-config', default=FINETUNE, help=f'default {FINETUNE}')
    p.add_argument('--scratch-config', default=SCRATCH, help=f'default {SCRATCH}')
    p.add_argument('--work-root', default='work_dirs/pretrain_finetune', help='where the runs go')
    p.add_argument('--finetune-epochs', type=int, help='max_epochs of the fine-tuning (default: the config\'s)')
    p.add_argument('--quick', action='store_true', help='one epoch per run: checks the set-up, figures mean nothing')
    p.add_argument('--force', action='store_true', help='train again runs that already finished')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra config overrides for all three runs (e.g. data.train.num_workers=0)')
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error('--seeds must be at least 1')
    return args


def final_metrics(work_dir: Path) -> dict[str, float]:
    """The last evaluation record of ``work_dir/log.jsonl`` (metric name -> value); {} when there is none."""
    from attnkit.report.data import LOG_KEYS, read_log

    log = work_dir / 'log.jsonl'
    if not log.is_file():
        return {}
    _, val, _ = read_log(str(log))
    if not val:
        return {}
    return {k: float(v) for k, v in val[-1].items() if k not in LOG_KEYS and isinstance(v, (int, float))}


def checkpoint_of(work_dir: Path) -> Path:
    """The classifier weights to fine-tune from: ``best.pth`` (best evaluation), else ``latest.pth``."""
    for name in ('best.pth', 'latest.pth'):
        if (work_dir / name).is_file():
            return work_dir / name
    raise SystemExit(f'error: the classifier run {work_dir} wrote no best.pth or latest.pth')


def train(config: str, work_dir: Path, seed: int, options: list[str], force: bool) -> dict[str, Any]:
    """Train ``config`` into ``work_dir`` (or reuse a finished run); ``{'metrics', 'wall_s', 'reused'}``."""
    done = work_dir / 'done.json'
    record = json.loads(done.read_text()) if done.is_file() else {}
    if record.get('options') == options and record.get('config') == config and not force \
            and final_metrics(work_dir):
        print(f'reused: {work_dir} (finished with the same options; --force trains again)', flush=True)
        return {'metrics': final_metrics(work_dir), 'wall_s': float(record['wall_s']), 'reused': True}
    cmd = [sys.executable, '-m', 'attnkit', 'train', config, '--work-dir', str(work_dir),
           '--cfg-options', f'runtime.seed={seed}', *options]
    print('$ ' + ' '.join(cmd), flush=True)
    start = time.time()
    result = subprocess.run(cmd, cwd=ROOT, check=False)
    wall = time.time() - start
    if result.returncode != 0:
        raise SystemExit(f'error: `{" ".join(cmd)}` failed with exit code {result.returncode}')
    metrics = final_metrics(work_dir)
    if not metrics:
        raise SystemExit(f'error: {work_dir}/log.jsonl holds no evaluation (is data.val set in {config}?)')
    done.write_text(json.dumps({'config': config, 'seed': seed, 'options': options, 'wall_s': wall}))
    return {'metrics': metrics, 'wall_s': wall, 'reused': False}


def mean_std(values: list[float]) -> str:
    """``'0.612 ± 0.015'`` (sample standard deviation; ``± n/a`` for one value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f'{mean:.3f} ± {std:.3f}' if not math.isnan(std) else f'{mean:.3f} ± n/a'


def table(runs: dict[str, list[dict[str, Any]]], cls_metric: str) -> str:
    """The markdown table of the comparison."""
    lines = ['| arm | detection AP | AP50 | wall minutes per seed | AP per seed |',
             '|---|---|---|---|---|']
    for arm, label in (('scratch', 'from scratch'), ('finetune', 'classification pre-training -> fine-tune')):
        rows = runs[arm]
        ap = [r['metrics'].get('AP', math.nan) for r in rows]
        ap50 = [r['metrics'].get('AP50', math.nan) for r in rows]
        wall = [r['wall_s'] + (r.get('pretrain_wall_s') or 0.0) for r in rows]
        lines.append(f"| {label} | {mean_std(ap)} | {mean_std(ap50)} | {statistics.fmean(wall) / 60:.1f} | "
                     + ', '.join(f'{v:.3f}' for v in ap) + ' |')
    cls = runs['classifier']
    top = [r['metrics'].get(cls_metric, math.nan) for r in cls]
    lines.append(f"| (pre-training alone; its {cls_metric}) | {mean_std(top)} | | "
                 f"{statistics.fmean(r['wall_s'] for r in cls) / 60:.1f} | " + ', '.join(f'{v:.3f}' for v in top)
                 + ' |')
    return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    root = Path(args.work_root)
    for config in (args.classifier_config, args.finetune_config, args.scratch_config):
        if not Path(config).is_file():
            raise SystemExit(f'error: config {config} does not exist')
    common = list(args.cfg_options) + (QUICK_OPTIONS if args.quick else [])
    finetune_extra = [f'schedule.max_epochs={args.finetune_epochs}'] if args.finetune_epochs else []
    runs: dict[str, list[dict[str, Any]]] = {'classifier': [], 'finetune': [], 'scratch': []}
    started = time.time()
    for seed in range(args.seeds):
        cls_dir = root / f'cls_s{seed}'
        cls = train(args.classifier_config, cls_dir, seed, common, args.force)
        weights = checkpoint_of(cls_dir)
        fine = train(args.finetune_config, root / f'finetune_s{seed}', seed,
                     common + finetune_extra + [f'model.backbone.pretrained={weights}'],
                     args.force or not cls['reused'])
        fine['pretrain_wall_s'] = cls['wall_s']
        scratch = train(args.scratch_config, root / f'scratch_s{seed}', seed, common, args.force)
        for arm, run in (('classifier', cls), ('finetune', fine), ('scratch', scratch)):
            runs[arm].append(run)
    cls_metric = next(iter(runs['classifier'][0]['metrics']), 'top1')
    text = table(runs, cls_metric)
    quick = ' (--quick: 1 epoch per run, the figures mean nothing)' if args.quick else ''
    head = (f'Demo detection AP, mean ± std over {args.seeds} seed(s){quick}; the wall time of the fine-tuned arm '
            'includes its pre-training.')
    print('\n' + head + '\n\n' + text)
    (root / 'summary.json').write_text(json.dumps(
        {'seeds': args.seeds, 'quick': args.quick, 'configs': [args.classifier_config, args.finetune_config,
                                                                args.scratch_config],
         'options': common, 'finetune_options': finetune_extra, 'runs': runs, 'table': text,
         'total_wall_s': time.time() - started}, indent=2))
    print(f'\nwritten: {root / "summary.json"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
