"""Engine benchmarks: Trainer overhead against a bare PyTorch loop, and 2-process CPU data parallelism.

    python tools/benchmark.py engine --mode overhead --iters 40 --repeats 5
    python tools/benchmark.py engine --mode ddp

``overhead``: the same small CNN, data, batch and SGD step, timed per iteration through ``Trainer.train()``
(progress bar, log.jsonl, TensorBoard, LR schedule, NaN check, accelerate wrappers) and through a bare loop
(DataLoader -> forward -> backward -> step), interleaved ``--repeats`` times in one process. The first
``--warmup`` iterations of each run are not timed. Target: Trainer / bare <= 1.05.

``ddp``: ``python -m attnkit train`` (1 process, batch B) against ``accelerate launch --num_processes 2``
(2 CPU processes, gloo, batch B/2 each): same global batch, so the same final metric; the throughput ratio
is reported (on a 2-core machine the two processes share the same cores, so expect ~1x, not 2x).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from ..evaluation import BaseEvaluator
from ..registry import DATASETS, METRICS, MODELS

__all__ = ['main']


@DATASETS.register_module()
class EngineBenchDataset:
    """Noise images whose class (0..9) shifts the mean of one colour channel in one image quadrant."""

    def __init__(self, length: int = 256, size: int = 64, seed: int = 0, metainfo: dict | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 10, (length,), generator=g)
        self.images = torch.randn(length, 3, size, size, generator=g)
        h = size // 2
        for i, c in enumerate(self.labels.tolist()):
            y, x = (c // 2 % 2) * h, (c % 2) * h
            self.images[i, c % 3, y:y + h, x:x + h] += 2.0 + 1.0 * (c // 4)
        self.metainfo = dict(metainfo or {'classes': [str(i) for i in range(10)]})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {'image': self.images[i], 'label': self.labels[i], 'meta': {'id': i}}

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        return {'images': torch.stack([s['image'] for s in samples]),
                'labels': torch.stack([s['label'] for s in samples]), 'metas': [s['meta'] for s in samples]}


@MODELS.register_module()
class EngineBenchNet(nn.Module):
    """A small CNN classifier (conv-GroupNorm-ReLU stages, stride 2 each). GroupNorm, not BatchNorm: per-process
    BatchNorm statistics would make 2 processes differ from 1 (SyncBatchNorm needs GPUs)."""

    def __init__(self, width: int = 32, metainfo: dict | None = None) -> None:
        super().__init__()
        self.metainfo = metainfo
        layers, c_in = [], 3
        for c_out in (width, width * 2, width * 4, width * 4):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.GroupNorm(4, c_out),
                       nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                       nn.GroupNorm(4, c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, 10)

    def forward(self, batch: dict):
        logits = self.fc(self.features(batch['images']).mean(dim=(2, 3))).float()
        if self.training:
            loss = nn.functional.cross_entropy(logits, batch['labels'])
            return {'loss': loss, 'loss_cls': loss.detach()}
        return [{'label': int(i)} for i in logits.argmax(1)]


@METRICS.register_module()
class EngineBenchAccuracy(BaseEvaluator):
    """Top-1 accuracy; ``count`` = records received."""

    def process(self, batch: dict, predictions: list) -> None:
        for meta, label, pred in zip(batch['metas'], batch['labels'], predictions):
            self.results.append((meta['id'], int(label), pred['label']))

    def compute(self) -> dict:
        n = max(len(self.results), 1)
        return {'accuracy': sum(r[1] == r[2] for r in self.results) / n,
                'count': float(len({r[0] for r in self.results}))}


def _config_text(work_dir: str, iters: int, batch_size: int, size: int, width: int, val: bool,
                 threads_note: str = '') -> str:
    val_text = (f"dict(dataset=dict(type='EngineBenchDataset', length=51, size={size}, seed=1), batch_size=8)"
                if val else 'None')
    return f"""# engine benchmark config {threads_note}
custom_imports = dict(imports=['attnkit.benchmarks.engine'])
model = dict(type='EngineBenchNet', width={width})
data = dict(train=dict(dataset=dict(type='EngineBenchDataset', length=256, size={size}), batch_size={batch_size},
                       num_workers=0),
            val={val_text})
evaluator = dict(type='EngineBenchAccuracy')
runtime = dict(seed=0, channels_last=True, log_interval=10, tensorboard=True)
optim = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
schedule = dict(by_epoch=False, max_iters={iters}, warmup_iters=5, policy='cosine')
train_cfg = dict(eval_interval=0, checkpoint_interval=0)
work_dir = {work_dir!r}
"""


def _per_iter(stamps: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration after ``warmup`` iterations, from (perf_counter, process_time) stamps."""
    n = len(stamps) - warmup
    return ((stamps[-1][0] - stamps[warmup - 1][0]) / n, (stamps[-1][1] - stamps[warmup - 1][1]) / n)


def _stamp() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _time_trainer(cfg_path: str, work_dir: str, warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration through ``Trainer.train()`` after ``warmup`` iterations."""
    from ..config import load_config
    from ..engine import Trainer
    trainer = Trainer(load_config(cfg_path), work_dir=work_dir)
    stamps: list[tuple[float, float]] = []
    trainer.hooks.append(lambda t: stamps.append(_stamp()))
    trainer.train()
    return _per_iter(stamps, warmup)


def _time_bare(iters: int, batch_size: int, size: int, width: int, warmup: int) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration of DataLoader -> forward -> backward -> SGD step, nothing else."""
    torch.manual_seed(0)
    dataset = EngineBenchDataset(length=256, size=size)
    model = EngineBenchNet(width=width).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    stamps: list[tuple[float, float]] = []
    while len(stamps) < iters:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                             collate_fn=dataset.collate)
        for batch in loader:
            batch['images'] = batch['images'].contiguous(memory_format=torch.channels_last)
            loss = model(batch)['loss']
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            stamps.append(_stamp())
            if len(stamps) == iters:
                break
    return _per_iter(stamps, warmup)


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    except OSError:
        return 'uptime unavailable'


def run_overhead(args: argparse.Namespace, tmp: str) -> dict:
    cfg_path = os.path.join(tmp, 'overhead.py')
    with open(cfg_path, 'w') as f:
        f.write(_config_text(os.path.join(tmp, 'overhead'), args.iters, args.batch_size, args.size, args.width,
                             val=False))
    trainer_t, bare_t = [], []
    print(f'overhead: {args.repeats} repeats x {args.iters} iterations (first {args.warmup} untimed), '
          f'batch {args.batch_size}, {args.size}px, width {args.width}, {torch.get_num_threads()} threads')
    print(f'  load before: {_uptime()}')
    _time_trainer(cfg_path, os.path.join(tmp, 'overhead_warm'), args.warmup)  # untimed: first-run costs
    _time_bare(args.iters, args.batch_size, args.size, args.width, args.warmup)
    for r in range(args.repeats):
        first_trainer = r % 2 == 0  # alternate the order so drifting machine load hits both equally
        for which in (('trainer', 'bare') if first_trainer else ('bare', 'trainer')):
            if which == 'trainer':
                trainer_t.append(_time_trainer(cfg_path, os.path.join(tmp, f'overhead_{r}'), args.warmup))
            else:
                bare_t.append(_time_bare(args.iters, args.batch_size, args.size, args.width, args.warmup))
        (tw, tc), (bw, bc) = trainer_t[-1], bare_t[-1]
        print(f'  repeat {r}: wall trainer {tw * 1e3:.1f} / bare {bw * 1e3:.1f} ms/it = {tw / bw:.3f}; '
              f'CPU trainer {tc * 1e3:.1f} / bare {bc * 1e3:.1f} ms/it = {tc / bc:.3f}', flush=True)
    result: dict = {'target': 1.05}
    for k, name in ((0, 'wall'), (1, 'cpu')):
        t = [x[k] for x in trainer_t]
        b = [x[k] for x in bare_t]
        result[name] = {'trainer_ms_median': 1e3 * statistics.median(t), 'bare_ms_median': 1e3 * statistics.median(b),
                        'ratio_median': statistics.median([x / y for x, y in zip(t, b)]),
                        'ratio_of_minima': min(t) / min(b)}
    print(f'  load after: {_uptime()}')
    for name in ('wall', 'cpu'):
        f = result[name]
        print(f"overhead ({name} time): Trainer {f['trainer_ms_median']:.1f} ms/it vs bare {f['bare_ms_median']:.1f} "
              f"ms/it (medians); ratio median {f['ratio_median']:.3f}, ratio of minima {f['ratio_of_minima']:.3f} "
              f"(target <= 1.05)")
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_train(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _summarise_log(work_dir: str, global_batch: int) -> dict:
    with open(os.path.join(work_dir, 'log.jsonl')) as f:
        log = [json.loads(line) for line in f]
    train = [r for r in log if r['mode'] == 'train'][1:]  # the first interval holds start-up costs
    val = [r for r in log if r['mode'] == 'val'][-1]
    iter_time = statistics.mean(r['iter_time'] for r in train)
    return {'accuracy': val['accuracy'], 'count': val['count'], 'iter_time': iter_time,
            'samples_per_s': global_batch / iter_time}


def run_ddp(args: argparse.Namespace, tmp: str) -> dict:
    gb = args.batch_size
    threads = max(torch.get_num_threads(), 1)
    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS=str(2 * threads))  # 1 process: all threads
    cfg1, cfg2 = os.path.join(tmp, 'ddp1.py'), os.path.join(tmp, 'ddp2.py')
    wd1, wd2 = os.path.join(tmp, 'ddp1'), os.path.join(tmp, 'ddp2')
    with open(cfg1, 'w') as f:
        f.write(_config_text(wd1, args.iters, gb, args.size, args.width, val=True))
    with open(cfg2, 'w') as f:
        f.write(_config_text(wd2, args.iters, gb // 2, args.size, args.width, val=True))
    print(f'ddp: {args.iters} iterations, global batch {gb}, 1 process x {2 * threads} threads vs 2 processes x '
          f'{threads} threads; load before: {_uptime()}', flush=True)
    t1 = _run_train([sys.executable, '-m', 'attnkit', 'train', cfg1], env)
    env2 = dict(env, OMP_NUM_THREADS=str(threads))  # 2 processes: half the threads each
    t2 = _run_train([sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                     '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
                     '--main_process_port', str(_free_port()), '-m', 'attnkit', 'train', cfg2], env2)
    wd1b, cfg1b = wd1 + '_1thread', cfg1[:-3] + '_1thread.py'
    with open(cfg1b, 'w') as f:
        f.write(_config_text(wd1b, args.iters, gb, args.size, args.width, val=True))
    _run_train([sys.executable, '-m', 'attnkit', 'train', cfg1b], dict(env, OMP_NUM_THREADS=str(threads)))
    one, two, one_1t = _summarise_log(wd1, gb), _summarise_log(wd2, gb), _summarise_log(wd1b, gb)
    result = {'one': one, 'two': two, 'one_half_threads': one_1t, 'wall_one_s': t1, 'wall_two_s': t2,
              'throughput_ratio': two['samples_per_s'] / one['samples_per_s'],
              'same_metric': abs(one['accuracy'] - two['accuracy']) < 1e-9 and one['count'] == two['count']}
    print(f'  load after: {_uptime()}')
    print(f"ddp: 1 process accuracy {one['accuracy']:.4f} ({one['count']:.0f} samples), "
          f"{one['samples_per_s']:.1f} samples/s; 2 processes accuracy {two['accuracy']:.4f} "
          f"({two['count']:.0f} samples), {two['samples_per_s']:.1f} samples/s; throughput ratio "
          f"{result['throughput_ratio']:.2f}; same metric: {result['same_metric']}; wall {t1:.1f} s vs {t2:.1f} s; "
          f"reference: 1 process x {threads} threads {one_1t['samples_per_s']:.1f} samples/s")
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='attnkit bench engine', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--mode', choices=('overhead', 'ddp', 'all'), default='all')
    parser.add_argument('--iters', type=int, default=40, help='iterations per run')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations at the start of each run')
    parser.add_argument('--repeats', type=int, default=5, help='interleaved Trainer/bare pairs (overhead)')
    parser.add_argument('--batch-size', type=int, default=16, help='global batch size')
    parser.add_argument('--size', type=int, default=64, help='image side')
    parser.add_argument('--width', type=int, default=16, help='CNN base width')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (0 = torch default)')
    parser.add_argument('--json', help='also write the figures as JSON here')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix='attnkit_bench_engine_') as tmp:
        if args.mode in ('overhead', 'all'):
            results['overhead'] = run_overhead(args, tmp)
        if args.mode in ('ddp', 'all'):
            results['ddp'] = run_ddp(args, tmp)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return 0
