"""Attention benchmark: forward+backward time and peak memory of every attention module, side by side
with timm's equivalent and with a naive HW x HW self-attention.

::

    python tools/benchmark.py attention                       # N=2, C=256, 64x64, float32
    python tools/benchmark.py attention --memory              # + self-attention at 128x128, C=64, N=1
    python tools/benchmark.py attention --modules se mhsa --dtype bfloat16 --channels-last

Each case runs in its own subprocess. Peak memory: the process's resident-set high-water mark
(``VmHWM``) is reset to the current RSS (``/proc/self/clear_refs`` = 5) after the module and input are
built, then one forward+backward runs and ``VmHWM - VmRSS(before)`` is reported. Time: median (and
min) of ``--repeats`` forward+backward passes after that first pass.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable

__all__ = ['main']

NAMES = ('se', 'eca', 'cbam', 'coord', 'simam', 'gc', 'nonlocal', 'mhsa', 'danet_pam', 'danet_cam',
         'criss_cross')
SELF_ATTENTION = ('nonlocal', 'mhsa', 'danet_pam', 'danet_cam', 'criss_cross')

# attnkit kwargs chosen to do the same work as the timm twin (paper defaults where both agree)
ATTNKIT_KWARGS: dict[str, dict[str, Any]] = {'nonlocal': {'reduction': 2}, 'mhsa': {'heads': 4}}


def _timm_twin(name: str, c: int, h: int, w: int):
    """timm's equivalent module, configured to the same widths as attnkit's defaults; None if none."""
    from timm.layers.bottleneck_attn import BottleneckAttn
    from timm.layers.cbam import CbamModule
    from timm.layers.coord_attn import CoordAttn
    from timm.layers.eca import EcaModule
    from timm.layers.global_context import GlobalContext
    from timm.layers.non_local_attn import NonLocalAttn
    from timm.layers.squeeze_excite import SEModule
    hidden = max(8, c // 16)
    return {
        'se': lambda: SEModule(c, rd_channels=hidden),
        'eca': lambda: EcaModule(c),
        'cbam': lambda: CbamModule(c, rd_channels=hidden, spatial_kernel_size=7),
        'coord': lambda: CoordAttn(c, rd_channels=max(8, c // 32), bias=True),
        'gc': lambda: GlobalContext(c, rd_channels=hidden, fuse_add=True, fuse_scale=False),
        'nonlocal': lambda: NonLocalAttn(c, use_scale=True, rd_channels=c // 2),
        'mhsa': lambda: BottleneckAttn(c, c, feat_size=(h, w), num_heads=4, scale_pos_embed=True),
    }.get(name, lambda: None)()


def _naive(name: str, module):
    """An HW x HW version of attnkit's self-attention ``module`` (same weights): softmax(QK^T)V materialised."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def tokens(t):  # (N, C, H, W) -> (N, HW, C)
        return t.flatten(2).transpose(1, 2)

    def untokens(t, h, w):
        return t.transpose(1, 2).reshape(t.shape[0], -1, h, w)

    def nonlocal_(x):
        q, k, v = tokens(module.qkv(x)).split(module.inner, -1)
        attn = torch.softmax(q @ k.transpose(1, 2) * module.scale, -1)
        return x + module.out(untokens(attn @ v, *x.shape[2:]))

    def pam(x):
        q, k, v = tokens(module.qkv(x)).split([module.key_channels, module.key_channels, module.channels], -1)
        return x + module.gamma * untokens(torch.softmax(q @ k.transpose(1, 2), -1) @ v, *x.shape[2:])

    def cam(x):
        xs = x.flatten(2)
        energy = xs @ xs.transpose(1, 2)
        attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, -1)
        return x + module.gamma * (attn @ xs).reshape(x.shape)

    def mhsa(x):
        n, c, h, w = x.shape
        q, k, v = module.augmented_qkv(x)
        attn = torch.softmax(q @ k.transpose(-1, -2) * module.scale, -1)
        return untokens((attn @ v).transpose(1, 2).reshape(n, h * w, c), h, w)

    def criss_cross(x):
        n, c, h, w = x.shape
        q, k, v = tokens(module.qkv(x)).split([module.key_channels, module.key_channels, c], -1)
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        ys, xs = ys.flatten(), xs.flatten()
        cross = (ys[:, None] == ys[None, :]) | (xs[:, None] == xs[None, :])
        attn = torch.softmax((q @ k.transpose(1, 2)).masked_fill(~cross, float('-inf')), -1)
        return x + module.gamma * untokens(attn @ v, h, w)

    fn = {'nonlocal': nonlocal_, 'danet_pam': pam, 'danet_cam': cam, 'mhsa': mhsa,
          'criss_cross': criss_cross}[name]

    class Naive(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            return fn(x)

    del F
    return Naive()


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _build(name: str, impl: str, c: int, h: int, w: int, heads: int | None):
    """The module for one implementation: 'attnkit', 'timm' or 'naive' (attnkit weights, HW x HW maths)."""
    from attnkit.attention import create_attention
    if impl == 'timm':
        return _timm_twin(name, c, h, w)
    kwargs = dict(ATTNKIT_KWARGS.get(name, {}))
    if name == 'mhsa':
        kwargs['max_size'] = max(h, w, 64)
        if heads is not None:
            kwargs['heads'] = heads
    module = create_attention(name, c, **kwargs)
    return _naive(name, module) if impl == 'naive' else module


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one case in this (fresh) process.

    ``spec['mode'] == 'memory'``: one forward+backward of ``spec['impls'][0]``; returns ``{'peak_mib'}``.
    ``'time'``: the implementations in ``spec['impls']`` alternate pass by pass (so that they see the same
    machine load); returns ``{impl: {'median_ms', 'min_ms'}}``.
    """
    import torch

    import attnkit  # noqa: F401  (registers the modules)
    torch.set_num_threads(spec['threads'])
    n, c, h, w = spec['n'], spec['c'], spec['h'], spec['w']
    dtype = getattr(torch, spec['dtype'])
    fmt = torch.channels_last if spec['channels_last'] else torch.contiguous_format
    steps = {}
    for impl in spec['impls']:
        torch.manual_seed(0)
        model = _build(spec['module'], impl, c, h, w, spec.get('heads')).to(dtype=dtype, memory_format=fmt).train()
        x = torch.randn(n, c, h, w, dtype=dtype).to(memory_format=fmt).requires_grad_()
        with torch.no_grad():
            grad = torch.randn_like(model(x))

        def step(model=model, x=x, grad=grad) -> None:
            model.zero_grad(set_to_none=True)
            x.grad = None
            model(x).backward(grad)
        steps[impl] = step

    if spec['mode'] == 'memory':
        step = steps[spec['impls'][0]]
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the RSS high-water mark to the current RSS
            before = _status_kib('VmRSS')
            step()
            return {'peak_mib': (_status_kib('VmHWM') - before) / 1024}
        except OSError as err:
            return {'error': f'cannot read the RSS high-water mark: {err}'}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {impl: [] for impl in steps}
    min_time_ms = spec.get('min_time', 0.0) * 1000
    passes = 0
    while passes < spec['repeats'] or (passes < 200 and min(sum(ts) for ts in times.values()) < min_time_ms):
        for impl, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[impl].append((time.perf_counter() - t0) * 1000)
        passes += 1
    out = {}
    for impl, ts in times.items():
        ts.sort()
        out[impl] = {'median_ms': ts[len(ts) // 2], 'min_ms': ts[0], 'passes': len(ts)}
    return out


def _run_case(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    code = 'import json, sys; from attnkit.benchmarks.attention import _worker; ' \
           'print("RESULT" + json.dumps(_worker(json.loads(sys.argv[1]))))'
    env = dict(os.environ, OMP_NUM_THREADS=str(spec['threads']), NO_ALBUMENTATIONS_UPDATE='1', HF_HUB_OFFLINE='1')
    try:
        proc = subprocess.run([sys.executable, '-c', code, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {'error': f'timeout after {timeout:.0f} s'}
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT'):
            return json.loads(line[6:])
    return {'error': (proc.stderr.strip().splitlines() or ['no output'])[-1][:200]}


def _fmt(value: float | None, digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [f'### {title}', '',
             '| module | attnkit ms (median / min) | attnkit peak MiB | timm ms (median / min) | timm peak MiB '
             '| attnkit/timm time, median (min) | naive HW×HW ms | naive peak MiB | attnkit/naive memory |',
             '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        a, t, nv = row.get('attnkit', {}), row.get('timm'), row.get('naive')

        def cell(r, key='median_ms'):
            if r is None:
                return '-'
            if key not in r:
                return f"error: {r.get('error', 'no result')}"
            return f"{_fmt(r['median_ms'])} / {_fmt(r['min_ms'])}" if key == 'median_ms' else _fmt(r[key])

        ratio = '-'
        if t and 'median_ms' in t and 'median_ms' in a:
            ratio = f"{a['median_ms'] / t['median_ms']:.2f} ({a['min_ms'] / t['min_ms']:.2f})"
        mem_ratio = '-'
        if nv and a.get('peak_mib') and nv.get('peak_mib'):
            mem_ratio = f"{a['peak_mib'] / nv['peak_mib']:.3f}"
        lines.append(f"| {row['module']} | {cell(a)} | {cell(a, 'peak_mib')} | {cell(t)} | {cell(t, 'peak_mib')} "
                     f"| {ratio} | {cell(nv)} | {cell(nv, 'peak_mib')} | {mem_ratio} |")
    return lines + ['']


def _suite(args: argparse.Namespace, n: int, c: int, h: int, w: int, names: list[str], with_timm: bool,
           repeats: int, heads: int | None, log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        row: dict[str, Any] = {'module': name}
        impls = ['attnkit'] + (['timm'] if with_timm and _has_timm(name) else []) + \
            (['naive'] if name in SELF_ATTENTION and not args.no_naive else [])
        base = dict(module=name, n=n, c=c, h=h, w=w, dtype=args.dtype, repeats=repeats, heads=heads,
                    channels_last=args.channels_last, threads=args.threads, min_time=args.min_time)
        for impl in impls:
            row[impl] = _run_case(dict(base, impls=[impl], mode='memory'), args.timeout)
        timed = _run_case(dict(base, impls=impls, mode='time'), args.timeout)
        for impl in impls:
            row[impl] = dict(row[impl], **timed.get(impl, {'error': timed.get('error', 'no result')}))
            log(f'{name:12s} {impl:8s} {row[impl]}')
        rows.append(row)
    return rows


def _has_timm(name: str) -> bool:
    return name in ('se', 'eca', 'cbam', 'coord', 'gc', 'nonlocal', 'mhsa')


def main(argv: list[str]) -> int:
    """Run the benchmark and print (and optionally write) a markdown table. Returns the exit status."""
    p = argparse.ArgumentParser(prog='attnkit bench attention', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=2)
    p.add_argument('--c', type=int, default=256)
    p.add_argument('--h', type=int, default=64)
    p.add_argument('--w', type=int, default=64)
    p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--modules', nargs='+', default=list(NAMES), choices=NAMES)
    p.add_argument('--no-naive', action='store_true', help='skip the naive HW x HW baselines')
    p.add_argument('--memory', action='store_true',
                   help='also run the memory case: self-attention at 128x128, C=64, N=1 against naive HW x HW')
    p.add_argument('--min-time', type=float, default=0.0,
                   help='keep alternating passes (up to 200) until each implementation ran this many seconds')
    p.add_argument('--memory-repeats', type=int, default=1, help='timed passes in the memory case')
    p.add_argument('--timeout', type=float, default=600.0, help='seconds per case')
    p.add_argument('--out', default=None, help='write the markdown report here (e.g. docs/bench/attention.md)')
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    command = 'python tools/benchmark.py attention ' + ' '.join(argv)
    load_before = os.getloadavg()
    lines = ['# Attention benchmark', '',
             f'Command: `{command}`  ', f'Machine: {platform.machine()}, {os.cpu_count()} CPUs, '
             f'torch threads {args.threads}, Python {platform.python_version()}  ',
             'Load average (1/5/15 min) at start: ' + ' / '.join(f'{v:.2f}' for v in load_before) + '  ',
             'Forward + backward of one module; time = median / min of '
             f'at least {args.repeats} passes (more until each implementation ran --min-time={args.min_time} s); '
             'the implementations of a module alternate pass by pass in one process so that they share the '
             'machine load; peak MiB = resident-set high-water mark during one pass above the RSS '
             'before it (each case in a fresh process).', '']
    layout = 'channels_last' if args.channels_last else 'contiguous'
    rows = _suite(args, args.n, args.c, args.h, args.w, args.modules, True, args.repeats, None, log)
    lines += _table(f'N={args.n}, C={args.c}, {args.h}x{args.w}, {args.dtype}, {layout}', rows)
    if args.memory:
        names = [m for m in args.modules if m in SELF_ATTENTION and m != 'danet_cam']
        mem_rows = _suite(args, 1, 64, 128, 128, names, False, args.memory_repeats, 1, log)
        lines += _table(f'Memory case: N=1, C=64, 128x128, {args.dtype}, {layout} (mhsa with 1 head: the naive '
                        f'4-head version needs ~13 GB)', mem_rows)
    load_after = os.getloadavg()
    lines.append(f'Load average at end: {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}')
    text = '\n'.join(lines) + '\n'
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
