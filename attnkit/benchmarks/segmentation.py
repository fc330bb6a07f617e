"""Segmentation benchmarks: ``python tools/benchmark.py segmentation {speed,memory,quality} [options]``.

* ``speed``: FCN R50-D8 at 512x512, batch 2: one training step (forward + backward + SGD step) and one
  inference, attnkit against ``torchvision.models.segmentation.fcn_resnet50(weights=None,
  weights_backbone=None, aux_loss=True)``, interleaved in one process; fp32 and bf16-autocast rows.
* ``memory``: peak memory of the DANet R50-D8 head at a 64x64 feature map (512x512 input), attnkit's SDPA
  position attention against the same head with a naive HW x HW position attention (each in a fresh process,
  peak RSS growth over one forward after a warm-up; channels_last unless ``--nchw``; ``--whole``: the whole
  model from the image).
* ``quality``: train the demo config from scratch and evaluate it (wall time, load, mIoU).

Every run prints the machine load (``uptime``) before and after, and ``--json FILE`` saves the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch
from torch import nn

__all__ = ['main', 'NaivePositionAttention']

FCN_CONFIG = 'configs/segmentation/fcn_r50-d8_voc12aug.py'
DANET_CONFIG = 'configs/segmentation/danet_r50-d8_voc12aug.py'
DEMO_CONFIG = 'configs/demo/danet_r18-d8_shapes.py'
NUM_CLASSES = 21


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ' '.join(map(str, os.getloadavg()))


def _metainfo(k: int = NUM_CLASSES) -> dict:
    from ..tasks.segmentation import VOC_CLASSES
    return {'classes': list(VOC_CLASSES)[:k]}


def _attnkit_model(config: str, torchvision_head: bool) -> nn.Module:
    from .. import build_model, load_config
    opts: dict[str, Any] = {'model.backbone.pretrained': None}
    if torchvision_head:  # the same head shape as torchvision's FCNHead: one 3x3 conv, no input concat
        opts.update({'model.decode_head.num_convs': 1, 'model.decode_head.concat_input': False})
    cfg = load_config(config, opts)
    return build_model(cfg.model, metainfo=_metainfo())


class _TorchvisionFCN(nn.Module):
    """torchvision's FCN with the same loss as attnkit's (CE, ignore 255, aux weight 0.4) for a training step.

    It normalises the uint8 batch with the same :class:`ImageNormalizer` as attnkit's models (torchvision's
    segmentation models expect normalised input), so both sides do the same work.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.segmentation import fcn_resnet50

        from ..data.normalize import ImageNormalizer
        self.net = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=NUM_CLASSES)
        self.normalizer = ImageNormalizer()

    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        out = self.net(self.normalizer(batch['images']))
        if not self.training:
            return out['out'].argmax(1)
        ce = nn.functional.cross_entropy
        loss_seg = ce(out['out'].float(), batch['masks'], ignore_index=255)
        loss_aux = ce(out['aux'].float(), batch['masks'], ignore_index=255)
        return {'loss': loss_seg + 0.4 * loss_aux}


def _step_fn(model: nn.Module, batch: dict, train: bool, bf16: bool) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if train else None

    def run() -> None:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            if train:
                model.train()
                loss = model(batch)['loss']
            else:
                model.eval()
                with torch.no_grad():
                    model(batch)
        if train:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def _speed(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    n, s = args.batch, args.size
    images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8)  # the batch contract: uint8 pixels
    masks = torch.randint(0, NUM_CLASSES, (n, s, s))
    metas = [{'img_size': (s, s), 'ori_size': (s, s)} for _ in range(n)]
    contenders: dict[str, tuple[nn.Module, bool]] = {
        'torchvision fcn_resnet50 (NCHW)': (_TorchvisionFCN(), False),
        'attnkit FCN R50-D8, torchvision head shape (channels_last)': (_attnkit_model(FCN_CONFIG, True), True),
    }
    if args.attnkit_nchw:  # attnkit with runtime.channels_last=False
        contenders['attnkit FCN R50-D8, torchvision head shape (NCHW)'] = (
            contenders.pop('attnkit FCN R50-D8, torchvision head shape (channels_last)')[0], False)
    if args.all:
        contenders['torchvision fcn_resnet50 (channels_last)'] = (_TorchvisionFCN(), True)
        contenders['attnkit FCN R50-D8, mmseg head (2 convs + concat) (channels_last)'] = (
            _attnkit_model(FCN_CONFIG, False), True)
    rows = []
    for dtype in args.dtypes:
        bf16 = dtype == 'bf16'
        for mode in args.modes:
            fns = {}
            for name, (model, cl) in contenders.items():
                model = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                x = images.contiguous(memory_format=torch.channels_last) if cl else images
                batch = {'images': x, 'masks': masks, 'metas': metas}
                fns[name] = _step_fn(model, batch, mode == 'train', bf16)
            times: dict[str, list[float]] = {name: [] for name in fns}
            for rep in range(args.warmup + args.repeats):
                for name, fn in fns.items():  # interleaved so that load changes hit every contender alike
                    t0 = time.perf_counter()
                    fn()
                    if rep >= args.warmup:
                        times[name].append(time.perf_counter() - t0)
            base = statistics.median(times['torchvision fcn_resnet50 (NCHW)'])
            for name, ts in times.items():
                med = statistics.median(ts)
                rows.append({'dtype': dtype, 'mode': mode, 'model': name, 'median_s': round(med, 3),
                             'min_s': round(min(ts), 3), 'ratio_vs_torchvision': round(med / base, 3)})
                print(f"{dtype:5s} {mode:5s} {name:75s} median {med:7.3f} s  min {min(ts):7.3f} s  "
                      f"ratio {med / base:5.3f}", flush=True)
    return {'rows': rows}


class NaivePositionAttention(nn.Module):
    """DANet's position attention written the naive way: the (N, HW, HW) energy and its softmax in memory.

    Shares the weights (``qkv``, ``gamma``) of an attnkit ``danet_pam`` module, so both give the same output.
    """

    def __init__(self, pam: nn.Module) -> None:
        super().__init__()
        self.qkv, self.gamma = pam.qkv, pam.gamma
        self.key_channels, self.channels = pam.key_channels, pam.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).split([self.key_channels, self.key_channels, self.channels], dim=1)
        energy = torch.bmm(q.flatten(2).transpose(1, 2), k.flatten(2))      # (N, HW, HW)
        attn = energy.softmax(dim=-1)
        out = torch.bmm(v.flatten(2), attn.transpose(1, 2)).view(n, c, h, w)  # (N, C, HW) x (N, HW, HW)
        return x + self.gamma * out


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _memory_one(args: argparse.Namespace) -> dict:
    """One variant in this (fresh) process: peak RSS growth over one head (or whole-model) inference."""
    torch.manual_seed(0)
    model = _attnkit_model(DANET_CONFIG, False).eval()
    head = model.decode_head
    with torch.no_grad():
        head.pam.gamma.fill_(0.5)
        head.cam.gamma.fill_(0.5)
    if args.variant == 'naive':
        head.pam = NaivePositionAttention(head.pam)
    s, n = args.size, args.batch
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if args.whole:
        run_input = torch.randn(n, 3, s, s).contiguous(memory_format=fmt)
        fn = lambda: model.encode_decode(run_input)  # noqa: E731
    else:
        feats = [None, None, None, torch.randn(n, 2048, s // 8, s // 8).contiguous(memory_format=fmt)]  # layer4
        fn = lambda: head(feats)  # noqa: E731
    with torch.no_grad():
        fn()  # warm-up: one-off allocations (kernels, caches) before measuring
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
        before = _rss_kib('VmRSS')
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
        peak = _rss_kib('VmHWM')
    seg = out['seg'] if isinstance(out, dict) else out
    return {'variant': args.variant, 'peak_mib': round((peak - before) / 1024, 1), 'time_s': round(elapsed, 3),
            'checksum': float(seg.double().sum())}


def _memory(args: argparse.Namespace) -> dict:
    rows = []
    for variant in ('sdpa', 'naive'):
        cmd = [sys.executable, '-c', 'import sys; from attnkit.benchmarks.segmentation import main; '
               'sys.exit(main(sys.argv[1:]))', 'memory-one', '--variant', variant, '--size', str(args.size),
               '--batch', str(args.batch), '--threads', str(args.threads)] + (['--whole'] if args.whole else []) + (
               [] if args.channels_last else ['--nchw'])
        # a fixed mmap threshold makes glibc map every large block afresh and unmap it on free (no dynamic
        # threshold, no heap reuse), so the RSS peak over the measured forward is that forward's own memory
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072', MALLOC_TRIM_THRESHOLD_='131072')
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if res.returncode != 0:
            raise RuntimeError(f'memory-one {variant} failed:\n{res.stderr[-3000:]}')
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    sdpa, naive = rows
    ratio = sdpa['peak_mib'] / max(naive['peak_mib'], 1e-9)
    same = abs(sdpa['checksum'] - naive['checksum']) <= 1e-3 * max(1.0, abs(naive['checksum']))
    what = ('whole model' if args.whole else 'DANet head') + (' (channels_last)' if args.channels_last else ' (NCHW)')
    print(f"{what} at {args.size}x{args.size} (feature map {args.size // 8}x{args.size // 8}), batch {args.batch}: "
          f"peak +{sdpa['peak_mib']} MiB (SDPA) vs +{naive['peak_mib']} MiB (naive HWxHW): ratio {ratio:.3f}; "
          f"outputs agree: {same}", flush=True)
    return {'rows': rows, 'ratio': round(ratio, 4), 'outputs_agree': same}


def _quality(args: argparse.Namespace) -> dict:
    from .. import load_config
    from ..data.demo import generate_demo_data
    from ..engine import Trainer
    generate_demo_data('data/demo')
    opts = dict(json.loads(args.cfg_options)) if args.cfg_options else {}
    cfg = load_config(args.config, opts)
    work_dir = args.work_dir or os.path.join('work_dirs', 'bench', 'segmentation_quality')
    start = time.time()
    trainer = Trainer(cfg, work_dir=work_dir)
    metrics = trainer.train()
    wall = time.time() - start
    summary = ''
    for evaluator in getattr(trainer, '_evaluators', {}).values():
        summary = evaluator.summary()
    print(summary)
    print(f"{args.config}: mIoU {metrics.get('mIoU', float('nan')):.4f}, mAcc {metrics.get('mAcc', float('nan')):.4f}, "
          f"aAcc {metrics.get('aAcc', float('nan')):.4f}; train + eval wall time {wall / 60:.1f} min", flush=True)
    return {'config': args.config, 'metrics': {k: v for k, v in metrics.items()}, 'wall_s': round(wall, 1),
            'summary': summary}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='benchmark.py segmentation', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('what', choices=['speed', 'memory', 'memory-one', 'quality'])
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=None, help='speed: 2, memory: 1')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--dtypes', default='fp32,bf16', help='speed: comma-separated fp32, bf16')
    parser.add_argument('--attnkit-nchw', action='store_true', help='speed: attnkit in NCHW (channels_last off)')
    parser.add_argument('--modes', default='train,infer', help='speed: comma-separated train, infer')
    parser.add_argument('--all', action='store_true', help='speed: also torchvision channels_last and the mmseg head')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0 = leave the default)')
    parser.add_argument('--variant', choices=['sdpa', 'naive'], default='sdpa')
    parser.add_argument('--whole', action='store_true', help='memory: the whole model instead of the head')
    parser.add_argument('--nchw', dest='channels_last', action='store_false',
                        help='memory: NCHW tensors (default channels_last, as attnkit trains and infers)')
    parser.add_argument('--config', default=DEMO_CONFIG)
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--cfg-options', default=None, help='quality: JSON dict of config overrides')
    parser.add_argument('--json', default=None, help='write the figures to this file')
    args = parser.parse_args(argv)
    args.dtypes = [d.strip() for d in args.dtypes.split(',') if d.strip()]
    args.modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    if args.batch is None:
        args.batch = 2 if args.what == 'speed' else 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == 'memory-one':
        print(json.dumps(_memory_one(args)))
        return 0
    load_before = _uptime()
    print(f'load before: {load_before}; torch threads {torch.get_num_threads()}', flush=True)
    result = {'speed': _speed, 'memory': _memory, 'quality': _quality}[args.what](args)
    load_after = _uptime()
    print(f'load after: {load_after}', flush=True)
    result.update({'what': args.what, 'argv': argv, 'threads': torch.get_num_threads(), 'load_before': load_before,
                   'load_after': load_after})
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:]))
