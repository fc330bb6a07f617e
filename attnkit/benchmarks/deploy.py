"""``attnkit bench deploy``: inference time of the deployed forms of attnkit models against torchvision.

For each model (random weights, batch 1, fp32 unless the fast path turns bf16 on where the hardware has it):

* ``torchvision eager``: the torchvision reference in the same process (``fcos_resnet50_fpn`` at the same input
  size; ``fcn_resnet50`` for the R50-D8 segmentors; the ``resnet50`` trunk at 448² for MCAN, as torchvision has
  no VQA model), under ``torch.no_grad``;
* ``attnkit eager``: the attnkit model as trained, under ``torch.no_grad``;
* ``fast``: :func:`attnkit.deploy.prepare_fast` (BN folded, identity attention removed, channels_last, bf16 only
  with bf16 units);
* ``fast + compile``: the same with ``torch.compile`` (inductor, weight freezing); the compile runs in the warm-up;
* ``ONNX Runtime``: when :mod:`attnkit.deploy.export` (``export_onnx``) and ``onnxruntime`` are installed.

Runs are interleaved (one call of every variant per round) so that machine load hits all alike; the table
gives the median wall time per call and its ratio to torchvision's. The attention table times ResNet-50
backbones with CBAM / SE / GC (every block of layers 2-4, gamma set to 0.1 as after training, so nothing is
folded away) against the plain one, on the fast path.

``attnkit bench deploy --iters 5 --out docs/bench/deploy.md``; ``--only fcos_512`` runs one model,
``--smoke`` tiny models at 64² (a test of the benchmark itself).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import closest_names

__all__ = ['main', 'CASES', 'run_case', 'attention_overhead', 'machine_facts']

NUM_CLASSES_DET = 91  # torchvision's COCO head
NUM_CLASSES_SEG = 21  # torchvision's fcn_resnet50 default (VOC)


@dataclass
class Case:
    """One benchmarked model: how to build the attnkit model, its input and the torchvision reference."""

    name: str
    title: str
    task: str
    size: tuple[int, int]
    attnkit_cfg: dict[str, Any]
    metainfo: dict[str, Any]
    reference: str  # description of the torchvision model
    notes: list[str] = field(default_factory=list)


def _fcos_cfg(tiny: bool) -> dict[str, Any]:
    if tiny:
        return dict(type='Detector', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2, 3)),
                    neck=dict(type='FPN', out_channels=16, num_outs=3),
                    head=dict(type='FCOSHead', feat_channels=16, stacked_convs=2, strides=(8, 16, 32),
                              regress_ranges=((-1, 16), (16, 32), (32, 1e8)), score_thr=0.2))
    return dict(type='Detector', backbone=dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3)),
                neck=dict(type='FPN', out_channels=256, num_outs=5, start_level=1, add_extra_convs='on_output',
                          relu_before_extra_convs=True),
                # torchvision's FCOS test settings, so that post-processing does the same work
                head=dict(type='FCOSHead', feat_channels=256, stacked_convs=4, score_thr=0.2, nms_pre=1000,
                          iou_thr=0.6, max_per_img=100))


def _seg_cfg(head: str, tiny: bool) -> dict[str, Any]:
    backbone = (dict(type='ResNet', depth=18, base_channels=8, out_indices=(0, 1, 2, 3), output_stride=8) if tiny
                else dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3), output_stride=8))
    channels = 16 if tiny else 512
    if head == 'fcn':  # torchvision's head shape (one 3x3 conv-BN-ReLU, no input concat), as bench segmentation
        decode = dict(type='fcn', in_index=3, channels=channels, num_convs=1, concat_input=False, dropout=0.1)
    else:  # configs/_base_/models/danet_r50-d8.py
        decode = dict(type='danet', in_index=3, channels=channels, pam=dict(type='danet_pam', reduction=8),
                      cam=dict(type='danet_cam'), identity_init=True, dropout=0.1)
    return dict(type='Segmentor', backbone=backbone, decode_head=decode, num_classes=NUM_CLASSES_SEG)


def _mcan_cfg(tiny: bool) -> dict[str, Any]:
    if tiny:
        return dict(type='VQAModel', backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(3,)),
                    question_encoder=dict(type='gru', embed_dim=8, hidden_dim=16),
                    head=dict(type='mcan', dim=32, heads=4, ffn=64, depth=1, flat_hidden=32, out_dim=64, dropout=0.0))
    return dict(type='VQAModel', backbone=dict(type='ResNet', depth=50, out_indices=(3,)),  # configs/_base_/models
                question_encoder=dict(type='gru', embed_dim=300, hidden_dim=512),
                head=dict(type='mcan', dim=512, heads=8, ffn=2048, depth=6, flat_hidden=512, glimpses=1, out_dim=1024,
                          dropout=0.1, pos_embed=True))


def _vqa_meta(tiny: bool) -> dict[str, Any]:
    answers, words = (8, 20) if tiny else (3129, 15000)  # VQA v2 vocabulary sizes
    return {'answers': [f'a{i}' for i in range(answers)], 'tokenizer': {'type': 'word', 'max_len': 14},
            'question_vocab': ['<pad>', '<unk>'] + [f'w{i}' for i in range(words)]}


def cases(tiny: bool = False) -> dict[str, Case]:
    """The benchmarked models by name (``tiny``: ResNet-18 at 1/8 width, 64² inputs, for tests)."""
    s = 64 if tiny else None
    det_meta = {'classes': [f'c{i}' for i in range(NUM_CLASSES_DET)]}
    trained = 'attention gamma set to 0.1 (as after training), so the fast path keeps PAM/CAM'
    r50 = ' (smoke: ResNet-18/8)' if tiny else ''
    fcos_ref, seg_ref = ('FCOS resnet18-FPN', 'lraspp_mobilenet_v3_large') if tiny else ('fcos_resnet50_fpn',
                                                                                        'fcn_resnet50')
    vqa_ref = 'resnet18 trunk' if tiny else 'resnet50 trunk (no VQA model in torchvision)'
    return {
        'fcos_512': Case('fcos_512', 'FCOS R50-FPN' + r50, 'detection', (s or 512, s or 512), _fcos_cfg(tiny),
                         det_meta, fcos_ref),
        'fcos_800x1333': Case('fcos_800x1333', 'FCOS R50-FPN' + r50, 'detection', (s or 800, s or 1333),
                              _fcos_cfg(tiny), det_meta, fcos_ref),
        'fcn_512': Case('fcn_512', 'FCN R50-D8' + r50, 'segmentation', (s or 512, s or 512), _seg_cfg('fcn', tiny),
                        {}, seg_ref, ["torchvision's head shape: decode_head num_convs=1, concat_input=False "
                                      '(the mmseg-style config, 2 convs + concat, does more work)']),
        'danet_512': Case('danet_512', 'DANet R50-D8' + r50, 'segmentation', (s or 512, s or 512),
                          _seg_cfg('danet', tiny), {}, seg_ref, [trained]),
        'mcan_448': Case('mcan_448', 'MCAN-R50 (GRU)' + r50, 'vqa', (s or 448, s or 448), _mcan_cfg(tiny),
                         _vqa_meta(tiny), vqa_ref),
    }


CASES = tuple(cases())


# ------------------------------------------------------------------ models and inputs
def _image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """(3, H, W) float in [0, 1]: the reference's input; attnkit gets the same pixels as uint8."""
    return torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))


def _trained_gammas(model: nn.Module, value: float = 0.1) -> int:
    """Set every attention ``gamma`` that is 0 (identity init) to ``value``, as a trained model has it."""
    from ..attention.base import AttentionModule
    n = 0
    for m in model.modules():
        if isinstance(m, AttentionModule) and m.gamma is not None and float(m.gamma) == 0.0:
            with torch.no_grad():
                m.gamma.fill_(value)
            n += 1
    return n


def _attnkit_model_and_batch(case: Case) -> tuple[nn.Module, dict[str, Any]]:
    from ..builder import build_model
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(case.attnkit_cfg), metainfo=case.metainfo or None).eval()
    _trained_gammas(model)
    h, w = case.size
    image = (_image(case.size) * 255).round().to(torch.uint8)
    if case.task == 'vqa':
        vocab = len(case.metainfo['question_vocab'])
        ids = torch.randint(2, vocab, (1, 14), generator=torch.Generator().manual_seed(0))
        return model, {'images': image[None], 'input_ids': ids, 'attention_mask': torch.ones(1, 14, dtype=torch.long),
                       'question_ids': [0]}
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32  # the collate pads to a multiple of 32, as torchvision does
    padded = torch.zeros(1, 3, ph, pw, dtype=torch.uint8)
    padded[0, :, :h, :w] = image
    meta = {'ori_size': (h, w), 'img_size': (h, w), 'scale_factor': (1.0, 1.0)}
    return model, {'images': padded, 'metas': [meta]}


def _reference(case: Case, tiny: bool) -> tuple[nn.Module, Callable[[], Any]]:
    """The torchvision model (random weights) and a call on the same image (float, [0, 1])."""
    import torchvision
    from torchvision.models import detection, segmentation
    torch.manual_seed(0)
    image = _image(case.size)
    h, w = case.size
    if case.task == 'detection':
        kwargs: dict[str, Any] = dict(weights=None, weights_backbone=None, min_size=min(h, w), max_size=max(h, w))
        if tiny:  # same structure, ResNet-18 trunk: the smoke test checks the plumbing, not the numbers
            backbone = detection.backbone_utils.resnet_fpn_backbone(
                backbone_name='resnet18', weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelP6P7(256, 256))
            model = detection.FCOS(backbone, num_classes=NUM_CLASSES_DET, min_size=min(h, w), max_size=max(h, w))
        else:
            model = detection.fcos_resnet50_fpn(**kwargs)
        model.eval()
        return model, lambda: model([image])
    if case.task == 'segmentation':
        model = (segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False) if not tiny
                 else segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)).eval()
        batch = image[None]
        return model, lambda: model(batch)
    model = nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-2]).eval()  # no pool/fc
    if tiny:
        model = nn.Sequential(*list(torchvision.models.resnet18(weights=None).children())[:-2]).eval()
    batch = image[None]
    return model, lambda: model(batch)


def _compare(task: str, eager: Any, other: Any) -> str:
    """How far another variant's predictions are from the eager model's (same batch)."""
    if task == 'detection':
        a, b = eager[0], other[0]
        if a['boxes'].shape != b['boxes'].shape:
            return f"{len(a['boxes'])} vs {len(b['boxes'])} boxes"
        if len(a['boxes']) == 0:
            return 'no boxes in either'
        same = bool(torch.equal(a['labels'], b['labels']))
        return (f"{len(a['boxes'])} boxes, labels {'equal' if same else 'differ'}, max |box diff| "
                f"{(a['boxes'] - b['boxes']).abs().max().item():.1e} px")
    if task == 'segmentation':
        a, b = eager[0]['sem_seg'], other[0]['sem_seg']
        return f'{(a == b).float().mean().item() * 100:.3f} % pixels equal'
    a, b = eager[0], other[0]
    return (f"answer {'equal' if a['answer'] == b['answer'] else 'differs'}, max |score diff| "
            f"{(a['scores'] - b['scores']).abs().max().item():.1e}")


def _onnx_runner(model: nn.Module, batch: dict[str, Any], case: Case) -> tuple[Callable[[], Any] | None, str]:
    """A call of the ONNX Runtime session of ``model`` (exported by attnkit.deploy.export), or None and why not."""
    try:
        from ..deploy.export import export_onnx
    except ImportError as exc:
        return None, f'attnkit.deploy.export.export_onnx is not available ({exc})'
    try:
        import onnxruntime as ort
    except ImportError:
        return None, 'onnxruntime is not installed (pip install attnkit[deploy])'
    inputs = (batch['images'],) if case.task != 'vqa' else (batch['images'], batch['input_ids'],
                                                             batch['attention_mask'])
    path = os.path.join(tempfile.mkdtemp(prefix='attnkit_bench_'), f'{case.name}.onnx')
    try:
        export_onnx(copy.deepcopy(model), case.task, tuple(batch['images'].shape[-2:]), path, inputs=inputs)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
        session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - the column is skipped with the reason
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''
        return None, f'ONNX export or session failed: {type(exc).__name__}: {first}'
    return (lambda: session.run(None, feeds)), 'ok'


# ------------------------------------------------------------------ timing
def _interleaved(runners: dict[str, Callable[[], Any]], iters: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of every runner: ``warmup`` calls each, then ``iters`` rounds of one call each."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for name, fn in runners.items():
            for _ in range(warmup):
                fn()
        for _ in range(iters):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def run_case(case: Case, *, iters: int, warmup: int, compile: bool, onnx: bool, tiny: bool) -> dict[str, Any]:
    """Time every variant of ``case``; returns ``{'rows': {variant: {...}}, 'notes': [...]}``."""
    from ..deploy import prepare_fast
    ref_model, ref_call = _reference(case, tiny)
    model, batch = _attnkit_model_and_batch(case)
    fast, report = prepare_fast(copy.deepcopy(model))
    runners: dict[str, Callable[[], Any]] = {f'torchvision {case.reference} eager': ref_call,
                                             'attnkit eager': lambda: model(batch), 'attnkit fast': lambda: fast(batch)}
    notes = list(case.notes) + [report.summary()]
    compiled = None
    if compile:
        compiled, _ = prepare_fast(copy.deepcopy(model), compile=True)
        start = time.perf_counter()
        compiled(batch)
        notes.append(f'compile (first call) {time.perf_counter() - start:.0f} s')
        runners['attnkit fast + compile'] = lambda: compiled(batch)
    if onnx:
        ort_call, why = _onnx_runner(model, batch, case)
        if ort_call is not None:
            runners['ONNX Runtime'] = ort_call
        else:
            notes.append(f'ONNX Runtime column skipped: {why}')
    with torch.no_grad():
        eager_out = model(batch)
        checks = {'attnkit fast': _compare(case.task, eager_out, fast(batch))}
        if compiled is not None:
            checks['attnkit fast + compile'] = _compare(case.task, eager_out, compiled(batch))
    times = _interleaved(runners, iters, warmup)
    ref = statistics.median(times[f'torchvision {case.reference} eager'])
    rows = {}
    for name, values in times.items():
        med = statistics.median(values)
        rows[name] = {'median_s': med, 'ratio': med / ref, 'all_s': values, 'check': checks.get(name, '')}
    return {'case': case, 'rows': rows, 'notes': notes}


def attention_overhead(*, iters: int, warmup: int, compile: bool, tiny: bool,
                       kinds: tuple[str, ...] = ('cbam', 'se', 'gc')) -> dict[str, Any]:
    """Median seconds of ResNet backbones with attention vs the plain one, on the fast path (and compiled)."""
    from ..builder import build_backbone
    from ..deploy import prepare_fast
    size = 64 if tiny else 512
    base = dict(type='ResNet', depth=18, base_channels=8) if tiny else dict(type='ResNet', depth=50)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    runners: dict[str, Callable[[], Any]] = {}
    for kind in ('plain',) + tuple(kinds):
        torch.manual_seed(0)
        cfg = dict(base) if kind == 'plain' else dict(base, attention=dict(type=kind))
        model = build_backbone(cfg).eval()
        _trained_gammas(model)
        fast, _ = prepare_fast(copy.deepcopy(model))
        runners[f'{kind} fast'] = (lambda m: lambda: m(x))(fast)
        if compile:
            comp, _ = prepare_fast(copy.deepcopy(model), compile=True)
            comp(x)
            runners[f'{kind} fast + compile'] = (lambda m: lambda: m(x))(comp)
    times = _interleaved(runners, iters, warmup)
    med = {name: statistics.median(v) for name, v in times.items()}
    rows = {}
    for name, value in med.items():
        kind, _, mode = name.partition(' ')
        rows[name] = {'median_s': value, 'overhead': value / med[f'plain {mode}'] - 1}
    return {'size': size, 'rows': rows}


# ------------------------------------------------------------------ report
def machine_facts() -> dict[str, str]:
    """CPU model (lscpu), bf16 units, torch threads and version, load (uptime)."""
    from ..deploy.fast import cpu_bf16_units
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False, timeout=10).stdout
        for line in out.splitlines():
            if line.strip().startswith('Model name:'):
                model = line.split(':', 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        load = subprocess.run(['uptime'], capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        load = 'unknown'
    _, bf16 = cpu_bf16_units()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
    return {'cpu': f'{model}, {os.cpu_count()} logical CPUs', 'bf16': bf16,
            'threads': str(torch.get_num_threads()), 'torch': torch.__version__, 'gpu': gpu, 'load': load}


def _ms(seconds: float) -> str:
    return f'{seconds * 1000:.0f}' if seconds >= 0.1 else f'{seconds * 1000:.1f}'


def markdown(results: list[dict[str, Any]], attention: dict[str, Any] | None, facts: dict[str, str],
             facts_after: dict[str, str], command: str, iters: int) -> str:
    """The report as markdown: machine, one table per model group, notes."""
    lines = [f'Command: `{command}`', '',
             f"Machine: {facts['cpu']}; {facts['bf16']}; torch {facts['torch']}, {facts['threads']} threads; "
             f"GPU: {facts['gpu']}.", f"Load before: `{facts['load']}`; after: `{facts_after['load']}`.", '',
             f'Median of {iters} interleaved calls, batch 1, milliseconds per call (ratio to torchvision eager '
             'fp32 in the same run).', '',
             '| model | input | variant | ms | × torchvision | predictions vs attnkit eager |',
             '|---|---|---|---:|---:|---|']
    for res in results:
        case = res['case']
        for name, row in res['rows'].items():
            lines.append(f"| {case.title} | {case.size[0]}×{case.size[1]} | {name} | {_ms(row['median_s'])} | "
                         f"{row['ratio']:.2f} | {row['check']} |")
    notes = [f"- {res['case'].name}: {n}" for res in results for n in res['notes']]
    if notes:
        lines += ['', 'Notes:', *notes]
    if attention is not None:
        size = attention['size']
        lines += ['', f'Attention overhead, ResNet backbone alone at {size}×{size} (attention in every block of '
                  'layers 2-4, gamma 0.1), fast path:', '', '| backbone | variant | ms | overhead vs plain |',
                  '|---|---|---:|---:|']
        for name, row in attention['rows'].items():
            kind, _, mode = name.partition(' ')
            lines.append(f"| {kind} | {mode} | {_ms(row['median_s'])} | {row['overhead'] * 100:+.1f} % |")
    return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> int:
    """``attnkit bench deploy [--iters N] [--only NAME] [--out FILE] [--smoke] [--no-compile] [--no-onnx]``."""
    parser = argparse.ArgumentParser(prog='attnkit bench deploy', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=10, help='timed calls per variant (median reported)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed calls per variant first')
    parser.add_argument('--only', action='append', metavar='NAME',
                        help=f"run only these (repeatable): {', '.join(CASES)}, attention")
    parser.add_argument('--out', help='also write the markdown report to this file')
    parser.add_argument('--smoke', action='store_true', help='tiny models at 64², 1 call each (tests the plumbing)')
    parser.add_argument('--no-compile', dest='compile', action='store_false',
                        help='skip the torch.compile variants (they compile for minutes on a CPU)')
    parser.add_argument('--no-onnx', dest='onnx', action='store_false', help='skip the ONNX Runtime column')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch default)')
    args = parser.parse_args(argv)
    known = CASES + ('attention',)
    for name in args.only or []:
        if name not in known:
            close = closest_names(name, known)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f'bench deploy --only {name!r} is not a benchmark.{hint} Choose from: '
                              f"{', '.join(known)}.")
    if args.iters < 1 or args.warmup < 0:
        raise ConfigError(f'bench deploy needs --iters >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}.')
    if args.threads:
        torch.set_num_threads(args.threads)
    iters, warmup = (1, 0) if args.smoke else (args.iters, args.warmup)
    compile_ = args.compile and not args.smoke
    selected = args.only or list(known)
    facts = machine_facts()
    all_cases = cases(tiny=args.smoke)
    results = []
    for name in CASES:
        if name in selected:
            print(f'[bench deploy] {name} ...', flush=True)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                results.append(run_case(all_cases[name], iters=iters, warmup=warmup, compile=compile_,
                                        onnx=args.onnx, tiny=args.smoke))
            for variant, row in results[-1]['rows'].items():  # progress on stderr: the full run takes a while
                print(f"  {variant}: {_ms(row['median_s'])} ms ({row['ratio']:.2f} x torchvision) {row['check']}",
                      file=sys.stderr, flush=True)
    attention = None
    if 'attention' in selected:
        print('[bench deploy] attention ...', flush=True)
        attention = attention_overhead(iters=iters, warmup=warmup, compile=compile_, tiny=args.smoke)
    command = 'attnkit bench deploy ' + ' '.join(argv)
    text = markdown(results, attention, facts, machine_facts(), command.strip(), iters)
    print(text, end='')
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text)
    return 0
