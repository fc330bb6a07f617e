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
gives the median wall time per call and its ratio to torchvision's, and the machine efficiency of every row:
the FLOPs of one call (torch's FLOP counter on the eager model: convolutions and matmuls), the achieved GFLOP/s
and their share of the machine's fp32 peak measured by a large ``torch.mm`` at the same threads
(:mod:`attnkit.benchmarks.efficiency`). The attention table times ResNet-50 backbones with CBAM / SE / GC (every
block of layers 2-4, gamma set to 0.1 as after training, so nothing is folded away) against the plain one, on the
fast path, with attention in its inference form (the default) and as trained (``eager attention``); with compile
also each inference form compiled alone and the whole backbone compiled.

``attnkit bench deploy --iters 5 --out docs/bench/deploy.md --json deploy.json``; ``--only fcos_512`` runs one
model, ``--attention-size 256`` a smaller attention table, ``--smoke`` tiny models at 64² (a test of the
benchmark itself). ``--device cuda`` runs every model on the GPU (each call timed to the end of its kernels; the
fast path picks bf16 there by itself; the ONNX Runtime column, the CPU's fp32 peak and the time inside attention
modules are CPU-only and left out).
"""
from __future__ import annotations

import argparse
import copy
import json
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
from .efficiency import count_flops, efficiency, sgemm_peak

__all__ = ['main', 'CASES', 'run_case', 'attention_overhead', 'machine_facts', 'markdown', 'json_report',
           'ATTENTION_VARIANTS']

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


def set_trained_gammas(model: nn.Module, value: float = 0.1) -> int:
    """Set every attention ``gamma`` that is 0 (identity init) to ``value``, as a trained model has it."""
    from ..attention.base import AttentionModule
    n = 0
    for m in model.modules():
        if isinstance(m, AttentionModule) and m.gamma is not None and float(m.gamma.detach()) == 0.0:
            with torch.no_grad():
                m.gamma.fill_(value)
            n += 1
    return n


def _attnkit_model_and_batch(case: Case) -> tuple[nn.Module, dict[str, Any]]:
    from ..builder import build_model
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(case.attnkit_cfg), metainfo=case.metainfo or None).eval()
    set_trained_gammas(model)
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


def _reference(case: Case, tiny: bool, device: torch.device = torch.device('cpu')) -> tuple[nn.Module,
                                                                                            Callable[[], Any]]:
    """The torchvision model (random weights) on ``device`` and a call on the same image (float, [0, 1])."""
    model = _reference_model(case, tiny).eval().to(device)
    image = _image(case.size).to(device)
    if case.task == 'detection':
        return model, lambda: model([image])
    batch = image[None]
    return model, lambda: model(batch)


def _reference_model(case: Case, tiny: bool) -> nn.Module:
    """torchvision's counterpart of ``case`` (random weights; ``tiny``: the smoke test's smaller trunk)."""
    import torchvision
    from torchvision.models import detection, segmentation
    torch.manual_seed(0)
    h, w = case.size
    if case.task == 'detection':
        if tiny:  # same structure, ResNet-18 trunk: the smoke test checks the plumbing, not the numbers
            backbone = detection.backbone_utils.resnet_fpn_backbone(
                backbone_name='resnet18', weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                extra_blocks=torchvision.ops.feature_pyramid_network.LastLevelP6P7(256, 256))
            return detection.FCOS(backbone, num_classes=NUM_CLASSES_DET, min_size=min(h, w), max_size=max(h, w))
        return detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, min_size=min(h, w),
                                           max_size=max(h, w))
    if case.task == 'segmentation':
        return (segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False) if not tiny
                else segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None))
    trunk = torchvision.models.resnet18 if tiny else torchvision.models.resnet50
    return nn.Sequential(*list(trunk(weights=None).children())[:-2])  # no pool/fc


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
def _interleaved(runners: dict[str, Callable[[], Any]], iters: int, warmup: int,
                 device: torch.device = torch.device('cpu')) -> dict[str, list[float]]:
    """Seconds per call of every runner: ``warmup`` calls each, then ``iters`` rounds of one call each.

    On CUDA each call is timed to the end of its kernels (``torch.cuda.synchronize`` before and after).
    """
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for name, fn in runners.items():
            for _ in range(warmup):
                fn()
        for _ in range(iters):
            for name, fn in runners.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with its tensors on ``device`` (metas and ids as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def run_case(case: Case, *, iters: int, warmup: int, compile: bool, onnx: bool, tiny: bool, bf16: Any = 'auto',
             peak_gflops: float | None = None, device: torch.device = torch.device('cpu')) -> dict[str, Any]:
    """Time every variant of ``case``; returns ``{'rows': {variant: {...}}, 'notes': [...], 'flops': {...}}``.

    Every row has ``flops`` (counted on the eager model it runs: torchvision's for the reference row, attnkit
    eager's for the attnkit rows, which do the same convolutions), ``gflops_per_s`` and ``pct_of_peak``
    (of ``peak_gflops``, see :mod:`attnkit.benchmarks.efficiency`). Everything runs on ``device``; the ONNX
    Runtime column only on the CPU (its CPU provider).
    """
    from ..deploy import prepare_fast
    ref_model, ref_call = _reference(case, tiny, device)
    model, batch = _attnkit_model_and_batch(case)
    model, batch = model.to(device), _to_device(batch, device)
    flops = {'reference': _flops_or_none(ref_call), 'attnkit': _flops_or_none(lambda: model(batch))}
    fast, report = prepare_fast(copy.deepcopy(model), bf16=bf16)
    runners: dict[str, Callable[[], Any]] = {f'torchvision {case.reference} eager': ref_call,
                                             'attnkit eager': lambda: model(batch), 'attnkit fast': lambda: fast(batch)}
    notes = list(case.notes) + [report.summary()]
    compiled = None
    if compile:
        compiled, _ = prepare_fast(copy.deepcopy(model), compile=True, bf16=bf16)
        start = time.perf_counter()
        compiled(batch)
        notes.append(f'compile (first call) {time.perf_counter() - start:.0f} s')
        runners['attnkit fast + compile'] = lambda: compiled(batch)
    if onnx and device.type != 'cpu':
        notes.append(f'ONNX Runtime column skipped: CPU only here (the run is on {device})')
    elif onnx:
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
    times = _interleaved(runners, iters, warmup, device)
    ref_name = f'torchvision {case.reference} eager'
    ref = statistics.median(times[ref_name])
    rows = {}
    for name, values in times.items():
        med = statistics.median(values)
        count = flops['reference' if name == ref_name else 'attnkit']
        rows[name] = {'median_s': med, 'ratio': med / ref, 'all_s': values, 'check': checks.get(name, ''),
                      'flops': count, **efficiency(count, med, peak_gflops)}
    return {'case': case, 'rows': rows, 'notes': notes, 'flops': flops}


def _flops_or_none(call: Callable[[], Any]) -> int | None:
    """FLOPs of one call (torch's FLOP counter), None when counting fails (the columns stay empty)."""
    try:
        return count_flops(call)[0]
    except Exception:  # noqa: BLE001 - an uncountable model only loses the efficiency columns
        return None


# attention-table variants: label -> prepare_fast keyword arguments ('fast' is prepare_fast's default)
ATTENTION_VARIANTS: dict[str, dict[str, Any]] = {
    'fast': {},
    'fast, stats from conv3 output': {'read_expansion': False},
    'fast, stock ops (no native kernel)': {'native': False},
    'fast, tails unfused': {'fuse_residual': False},
    'fast, eager attention': {'attention': 'eager'},
    'fast, compiled attention': {'attention': 'compile'},
    'fast + compile': {'compile': True},
}


def attention_overhead(*, iters: int, warmup: int, compile: bool | str, tiny: bool, size: int | None = None,
                       bf16: Any = 'auto', kinds: tuple[str, ...] = ('cbam', 'se', 'gc'),
                       device: torch.device = torch.device('cpu')) -> dict[str, Any]:
    """Median seconds of ResNet backbones with attention vs the plain one, on the fast path.

    Variants (:data:`ATTENTION_VARIANTS`): ``fast`` (the default: attention in its inference form, gates fused with
    the blocks' residual additions, statistics read through the bottlenecks' ``conv3``), ``fast, stats from conv3
    output`` (fused tails that read the map itself; only where ``fast`` reads through some ``conv3``), ``fast, stock
    ops (no native kernel)`` (only where ``fast`` runs some form through a native CPU kernel), ``fast, tails
    unfused`` (the forms alone, the blocks' own additions), ``fast,
    eager attention`` (the modules as trained, for comparison), and with ``compile`` ``fast, compiled attention``
    (each inference form compiled alone) and ``fast + compile`` (the whole backbone compiled). The plain backbone
    has no attention, so it runs ``fast`` (and ``fast + compile``) only; each row's overhead is against the plain
    row of the same compile state. The first call (compilation) happens in the warm-up. ``compile='attention'``
    adds only ``fast, compiled attention`` (seconds to compile, against minutes for a whole backbone).

    Whole-call differences of a few % drown in the noise of a loaded machine, so the rows other than ``fast +
    compile`` also give the time spent inside the attention modules (forward pre/post hooks, or a timer round a
    compiled form's call; summed per call, median over calls) and its share of the plain backbone's median: the
    overhead measured directly. The timers run on a copy of each model, interleaved with the untimed calls that
    give the rows' whole-call times (except a compiled form's, timed in its own calls: a copy would recompile). A
    fused tail also does the block's addition and ReLU, which the plain backbone does too: its time minus the plain
    backbone's time in the same blocks' additions (a timer round their ``_finish``) is counted; a tail that also
    runs ``conv3`` (reading through the expansion) has the plain backbone's ``conv3`` time in those blocks taken
    off as well.

    Returns:
        ``{'size': px, 'rows': {'<kind> <variant>': {'median_s', 'overhead', 'all_s', 'attention_s',
        'attention_share'}}, 'notes': [...]}`` (``attention_s``/``attention_share`` None where not measured).
    """
    from ..builder import build_backbone
    from ..deploy import prepare_fast
    size = size or (64 if tiny else 512)
    base = dict(type='ResNet', depth=18, base_channels=8) if tiny else dict(type='ResNet', depth=50)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    timed_inside = device.type == 'cpu'  # CUDA kernels run asynchronously: host timers round modules mean nothing
    notes: list[str] = [] if timed_inside else [f'on {device}: whole calls only (no time inside the modules)']
    variants = [v for v in ATTENTION_VARIANTS
                if 'compile' not in v or compile is True or (compile == 'attention' and v != 'fast + compile')]
    runners: dict[str, Callable[[], Any]] = {}
    inside: dict[str, list[float]] = {}  # per call: seconds inside the attention modules
    fused_rows: dict[str, bool] = {}  # rows whose attention (partly) runs in fused residual tails
    expansion_rows: dict[str, bool] = {}  # rows whose tails also run conv3
    tail_blocks: set[str] = set()  # blocks whose attention runs in a fused tail, in any variant
    expansion_blocks: set[str] = set()  # blocks whose tail runs conv3, in any variant
    plain_conv3: list[float] = []  # per call of the plain backbone: seconds in conv3 of expansion_blocks
    plain_fast: nn.Module | None = None
    for kind in ('plain',) + tuple(kinds):
        torch.manual_seed(0)
        # identity_init (as when training from a pretrained backbone) gives every module its gamma, set to 0.1
        cfg = dict(base) if kind == 'plain' else dict(base, attention=dict(type=kind), identity_init=True)
        model = build_backbone(cfg).eval().to(device)
        set_trained_gammas(model)
        reads_expansion = False  # the 'fast' variant (prepared first) reads through some conv3
        uses_native = False  # ... runs some form through a native kernel
        for variant in variants:
            if kind == 'plain' and variant not in ('fast', 'fast + compile'):
                continue
            if 'read_expansion' in ATTENTION_VARIANTS[variant] and not reads_expansion:
                continue  # the same model as 'fast'
            if 'native' in ATTENTION_VARIANTS[variant] and not uses_native:
                continue
            fast, report = prepare_fast(copy.deepcopy(model), bf16=bf16, **ATTENTION_VARIANTS[variant])
            if variant == 'fast':
                notes.append(f'{kind}: {report.summary()}')
                reads_expansion = bool(report.expansion_tails)
                uses_native = bool(report.native_forms)
            tail_blocks.update(n.rpartition('.')[0] for n in report.fused_tails)
            expansion_blocks.update(n.rpartition('.')[0] for n in report.expansion_tails)
            if 'compile' in variant:
                start = time.perf_counter()
                fast(x)
                notes.append(f'{kind} {variant}: compile (first call) {time.perf_counter() - start:.0f} s')
            name = f'{kind} {variant}'
            fused_rows[name] = bool(report.fused_tails)
            expansion_rows[name] = bool(report.expansion_tails)
            runners[name] = (lambda m: (lambda: m(x)))(fast)  # the whole call, without timers
            if kind != 'plain' and variant != 'fast + compile' and timed_inside:
                inside[name] = []
                if 'compile' in variant:  # compiled forms are timed in the calls above (a copy would recompile)
                    _time_attention(fast, inside[name])
                    runners[name] = _counted(runners[name], inside[name])
                else:  # timers cost time themselves: the time inside the modules comes from calls of a copy
                    runners[name + TIMED] = _counted((lambda m: (lambda: m(x)))(
                        _time_attention(copy.deepcopy(fast), inside[name])), inside[name])
            if name == 'plain fast' and timed_inside:
                plain_fast, inside[name] = copy.deepcopy(fast), []
    if plain_fast is not None:  # the plain backbone's additions + ReLUs (and conv3s) in the fused blocks, timed
        _time_tails(plain_fast, sorted(tail_blocks), inside['plain fast'])
        for block in sorted(expansion_blocks):  # conv3 runs as a plain call in the plain backbone
            conv3 = plain_fast.get_submodule(block).conv3
            conv3.forward = _timed(conv3.forward, plain_conv3)
        runners['plain fast' + TIMED] = _counted(_counted((lambda: plain_fast(x)), inside['plain fast']),
                                                 plain_conv3)
    times = _interleaved(runners, iters, warmup, device)
    times = {name: v for name, v in times.items() if not name.endswith(TIMED)}
    plain_tails = statistics.median(inside.pop('plain fast')[-iters:]) if 'plain fast' in inside else 0.0
    conv3_time = statistics.median(plain_conv3[-iters:]) if plain_conv3 else 0.0
    med = {name: statistics.median(v) for name, v in times.items()}
    rows = {}
    for name, value in med.items():
        mode = name.partition(' ')[2]
        plain = med['plain fast + compile' if mode == 'fast + compile' else 'plain fast']
        att = statistics.median(inside[name][-iters:]) if name in inside else None
        if att is not None and fused_rows.get(name):
            att -= plain_tails + (conv3_time if expansion_rows.get(name) else 0.0)
        rows[name] = {'median_s': value, 'overhead': value / plain - 1, 'all_s': times[name], 'attention_s': att,
                      'attention_share': None if att is None else att / plain}
    return {'size': size, 'rows': rows, 'notes': notes}


TIMED = ' (timed)'  # runners of the instrumented copies: their calls give the time inside modules, not rows


def _counted(run: Callable[[], Any], calls: list[float]) -> Callable[[], Any]:
    """``run`` with a new entry (0 s) appended to ``calls`` before each call, for timers to add to."""
    return lambda: (calls.append(0.0), run())[1]


def _time_attention(model: nn.Module, calls: list[float]) -> nn.Module:
    """Hooks on every attention module (eager or inference form) adding its forward time to ``calls[-1]``."""
    from ..attention.base import AttentionModule
    from ..deploy.attention_fast import InferenceGate
    starts: list[float] = []

    def pre(module: nn.Module, args: Any) -> None:
        starts.append(time.perf_counter())

    def post(module: nn.Module, args: Any, out: Any) -> None:
        calls[-1] += time.perf_counter() - starts.pop()

    for module in model.modules():
        if getattr(module, 'attn_fused_tail', False):  # a block whose form runs as its tail (one entry point)
            form = module.attn
            entry = 'forward_expansion' if module.attn_reads_expansion else 'forward_residual'
            setattr(form, entry, _timed(getattr(form, entry), calls))
        if isinstance(module, (AttentionModule, InferenceGate)):
            compiled = getattr(module, '_compiled_call_impl', None)
            if compiled is not None:  # hooks would be traced into its graph and break it (30x slower): wrap it
                module._compiled_call_impl = _timed(compiled, calls)
                continue
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
    return model


def _time_tails(model: nn.Module, blocks: list[str], calls: list[float]) -> None:
    """A timer round ``_finish`` (residual addition + ReLU) of each block named in ``blocks``, adding to
    ``calls[-1]``: the plain backbone's share of what a fused tail does."""
    for name in blocks:
        block = model.get_submodule(name)
        block._finish = _timed(block._finish, calls)


def _timed(call: Callable[..., Any], calls: list[float]) -> Callable[..., Any]:
    """``call`` adding its wall time to ``calls[-1]``."""
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = call(*args, **kwargs)
        calls[-1] += time.perf_counter() - start
        return out
    return run


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


def _num(value: float | None, fmt: str) -> str:
    return '' if value is None else format(value, fmt)


def markdown(results: list[dict[str, Any]], attention: dict[str, Any] | None, facts: dict[str, str],
             facts_after: dict[str, str], command: str, iters: int, peak: dict[str, Any] | None = None) -> str:
    """The report as markdown: machine (and its measured fp32 peak), one table per model group, notes."""
    lines = [f'Command: `{command}`', '',
             f"Machine: {facts['cpu']}; {facts['bf16']}; torch {facts['torch']}, {facts['threads']} threads; "
             f"GPU: {facts['gpu']}.", f"Load before: `{facts['load']}`; after: `{facts_after['load']}`."]
    if peak is not None:
        lines.append(f"Measured fp32 peak: {peak['gflops']:.1f} GFLOP/s (torch.mm {peak['n']}×{peak['n']} fp32, "
                     f"{peak['threads']} threads, best of {peak['calls']} calls).")
    if results:
        lines += ['', f'Median of {iters} interleaved calls, batch 1, milliseconds per call (ratio to torchvision '
                  'eager fp32 in the same run). GFLOP: convolution and matmul FLOPs of one call (2 per multiply-add, '
                  "torch's FLOP counter on the eager model; elementwise ops, norms, pooling, NMS not counted); "
                  'GFLOP/s: GFLOP over the median time; % of peak: of the measured fp32 peak.', '',
                  '| model | input | variant | ms | × torchvision | predictions vs attnkit eager | GFLOP | GFLOP/s | '
                  '% of peak |', '|---|---|---|---:|---:|---|---:|---:|---:|']
    for res in results:
        case = res['case']
        for name, row in res['rows'].items():
            gflop = None if row.get('flops') is None else row['flops'] / 1e9
            lines.append(f"| {case.title} | {case.size[0]}×{case.size[1]} | {name} | {_ms(row['median_s'])} | "
                         f"{row['ratio']:.2f} | {row['check']} | {_num(gflop, '.3g')} | "
                         f"{_num(row.get('gflops_per_s'), '.1f')} | {_num(row.get('pct_of_peak'), '.0f')} |")
    notes = [f"- {res['case'].name}: {n}" for res in results for n in res['notes']]
    if notes:
        lines += ['', 'Notes:', *notes]
    if attention is not None:
        size = attention['size']
        lines += ['', f'Attention overhead, ResNet backbone alone at {size}×{size} (attention in every block of '
                  'layers 2-4, gamma 0.1), fast path (`fast`: the default, attention in its inference form; '
                  f'`eager attention`: the modules as trained). Median of {iters} interleaved calls; "in attention '
                  'modules": time inside them per call (hooks), the overhead measured directly.', '',
                  '| backbone | variant | ms | overhead vs plain | in attention modules: ms | % of plain |',
                  '|---|---|---:|---:|---:|---:|']
        for name, row in attention['rows'].items():
            kind, _, mode = name.partition(' ')
            att, share = row.get('attention_s'), row.get('attention_share')
            lines.append(f"| {kind} | {mode} | {_ms(row['median_s'])} | {row['overhead'] * 100:+.1f} % | "
                         f"{'' if att is None else _ms(att)} | {'' if share is None else f'{share * 100:.1f} %'} |")
        if attention.get('notes'):
            lines += ['', 'Notes:', *(f'- {n}' for n in attention['notes'])]
    return '\n'.join(lines) + '\n'


def json_report(results: list[dict[str, Any]], attention: dict[str, Any] | None, facts: dict[str, str],
                facts_after: dict[str, str], command: str, iters: int, peak: dict[str, Any] | None) -> dict[str, Any]:
    """The same figures as :func:`markdown`, as plain data (seconds, FLOPs, GFLOP/s, % of peak)."""
    cases_out = [{'name': r['case'].name, 'title': r['case'].title, 'size': list(r['case'].size),
                  'reference': r['case'].reference, 'flops': r['flops'], 'rows': r['rows'], 'notes': r['notes']}
                 for r in results]
    return {'command': command, 'iters': iters, 'machine': facts, 'load_after': facts_after['load'],
            'peak': peak, 'cases': cases_out, 'attention': attention}


def _bench_device(name: str) -> torch.device:
    """``--device`` as a torch device; a clear error for a malformed name or a CUDA device this machine lacks."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f'bench deploy --device {name!r} is not a device name (cpu, cuda, cuda:1): {exc}') from exc
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'bench deploy --device {name}: CUDA is not available on this machine '
                          '(torch.cuda.is_available() is False); run it on a GPU machine, or drop --device.')
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f'bench deploy --device {name}: this machine has {torch.cuda.device_count()} CUDA '
                          'device(s).')
    if device.type not in ('cpu', 'cuda'):
        raise ConfigError(f'bench deploy --device {name}: only cpu and cuda are benchmarked.')
    return device


def main(argv: list[str]) -> int:
    """``attnkit bench deploy [--iters N] [--only NAME] [--out FILE] [--json FILE] [--smoke] [--no-compile]
    [--compile-attention-only] [--fast-dtype auto|fp32|bf16] [--device cpu|cuda|cuda:N]
    [--no-onnx] [--threads N] [--attention-size PX]``."""
    from ..deploy import FAST_DTYPES
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
    parser.add_argument('--compile-attention-only', action='store_true',
                        help='of the torch.compile variants, run only "fast, compiled attention" (the attention '
                             'table\'s forms compiled alone: seconds, not minutes)')
    parser.add_argument('--no-onnx', dest='onnx', action='store_false', help='skip the ONNX Runtime column')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch default)')
    parser.add_argument('--attention-size', type=int, metavar='PX',
                        help='input size of the attention-overhead table (default 512; smoke 64)')
    parser.add_argument('--json', help='also write the figures as JSON to this file')
    parser.add_argument('--fast-dtype', choices=tuple(FAST_DTYPES), default='auto',
                        help='the fast rows\' dtype: auto = bf16 on a CPU with bf16 units (or CUDA), else fp32')
    parser.add_argument('--device', default='cpu',
                        help='where every model runs: cpu (default) or cuda[:N] (timed to the end of its kernels; '
                             'ONNX Runtime and the time inside attention modules only on the CPU)')
    args = parser.parse_args(argv)
    device = _bench_device(args.device)
    known = CASES + ('attention',)
    for name in args.only or []:
        if name not in known:
            close = closest_names(name, known)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f'bench deploy --only {name!r} is not a benchmark.{hint} Choose from: '
                              f"{', '.join(known)}.")
    if args.iters < 1 or args.warmup < 0:
        raise ConfigError(f'bench deploy needs --iters >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}.')
    if args.attention_size is not None and (args.attention_size < 32 or args.attention_size % 32):
        raise ConfigError(f'bench deploy --attention-size must be a multiple of 32 (at least 32), got '
                          f'{args.attention_size}.')
    if args.threads:
        torch.set_num_threads(args.threads)
    iters, warmup = (1, 0) if args.smoke else (args.iters, args.warmup)
    compile_ = args.compile and not args.smoke and not args.compile_attention_only
    bf16 = FAST_DTYPES[args.fast_dtype]
    selected = args.only or list(known)
    facts = machine_facts()
    peak = sgemm_peak(0.3 if args.smoke else 2.5) if device.type == 'cpu' else None  # the CPU's fp32 rate
    all_cases = cases(tiny=args.smoke)
    results = []
    for name in CASES:
        if name in selected:
            print(f'[bench deploy] {name} ...', flush=True)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                results.append(run_case(all_cases[name], iters=iters, warmup=warmup, compile=compile_, bf16=bf16,
                                        onnx=args.onnx, tiny=args.smoke, device=device,
                                        peak_gflops=peak['gflops'] if peak else None))
            for variant, row in results[-1]['rows'].items():  # progress on stderr: the full run takes a while
                print(f"  {variant}: {_ms(row['median_s'])} ms ({row['ratio']:.2f} x torchvision) {row['check']}",
                      file=sys.stderr, flush=True)
    attention = None
    if 'attention' in selected:
        print('[bench deploy] attention ...', flush=True)
        attention_compile = 'attention' if args.compile_attention_only and args.compile else compile_
        attention = attention_overhead(iters=iters, warmup=warmup, compile=attention_compile, tiny=args.smoke,
                                       size=args.attention_size, bf16=bf16, device=device)
    command = ('attnkit bench deploy ' + ' '.join(argv)).strip()
    facts_after = machine_facts()
    text = markdown(results, attention, facts, facts_after, command, iters, peak)
    print(text, end='')
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(json_report(results, attention, facts, facts_after, command, iters, peak), f, indent=2)
    return 0
