#!/usr/bin/env python
"""GPU readiness check: a bf16 training step and inference for each task at real sizes, the SDPA backend each
attention call gets, and the training step time against torchvision's FCOS and FCN on the same device.

    python tools/gpu_check.py --out gpu_check.md                   # one GPU: at most ~8 minutes (H200: far less)
    python tools/gpu_check.py --device cpu --tiny --out tiny.md    # the same path, small sizes and models (CPU)

Models are built from the configs in ``configs/`` with random weights (``pretrained`` off) and fed random data:

* detection: FCOS R50-FPN (``configs/detection/fcos_r50_fpn_1x_coco.py``), 800x1333 (padded 800x1344), batch 2,
  against ``torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None)``;
* segmentation: FCN and DANet R50-D8 (``configs/segmentation/``), 512x512, batch 4, FCN against
  ``torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True)``;
* VQA: MCAN-R50 (``configs/vqa/mcan_r50_gru_vqav2.py``), 448x448, 64 questions (one image each).

Every contender runs channels_last with bf16 autocast (``--dtype fp32`` turns autocast off; the default ``auto``
does so on CPUs without native bf16) and takes its batch
already on the device (attnkit: uint8 images, normalised inside the model; torchvision: float 0..1 images, which
its own transform normalises). Step times are the median of ``--steps`` timed steps after ``--warmup`` steps.

SDPA: one training step per attnkit model runs with ``F.scaled_dot_product_attention`` wrapped, recording every
call (the innermost module, shapes, dtype, mask, dropout). Each distinct call is replayed (forward and, when the
inputs need gradients, backward) with each backend forced through ``torch.nn.attention.sdpa_kernel``, and the
backend PyTorch's dispatcher picks by default is read with ``torch._fused_sdp_choice``. At real sizes a call that
gets the math kernel (which builds the L x L matrix) is a FAIL; ``--tiny`` reports it without failing (the CPU
flash kernel, for example, refuses dropout, which MCAN uses while training).

Writes a markdown report to stdout and to ``--out``; the exit code is 1 when any check failed.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BACKENDS = ('FLASH_ATTENTION', 'EFFICIENT_ATTENTION', 'CUDNN_ATTENTION', 'MATH')
SHORT = {'FLASH_ATTENTION': 'flash', 'EFFICIENT_ATTENTION': 'efficient', 'CUDNN_ATTENTION': 'cudnn', 'MATH': 'math',
         'ERROR': 'error', 'OVERRIDEABLE': 'overrideable'}


# ----------------------------------------------------------------------------------------------- set-up
def _sizes(tiny: bool) -> dict[str, Any]:
    """Input sizes and batches per task (real: the configs' training batch per GPU)."""
    if tiny:
        return dict(det=(64, 96), det_batch=2, seg=64, seg_batch=2, vqa=64, vqa_batch=2, warmup=0, steps=1,
                    tiny=True)
    return dict(det=(800, 1333), det_batch=2, seg=512, seg_batch=4, vqa=448, vqa_batch=64, warmup=3, steps=10,
                tiny=False)


# --tiny: the same configs and code paths with narrow ResNet-18 models, so that a CPU runs them in seconds
TINY_OPTIONS = {
    'detection': {'model.backbone.depth': 18, 'model.backbone.base_channels': 16, 'model.neck.out_channels': 32,
                  'model.head.feat_channels': 32},
    'segmentation': {'model.backbone.depth': 18, 'model.backbone.base_channels': 16, 'model.decode_head.channels': 32,
                     'model.auxiliary_head.channels': 16},
    'vqa': {'model.backbone.depth': 18, 'model.backbone.base_channels': 16, 'model.head.dim': 64,
            'model.head.ffn': 128, 'model.head.heads': 2, 'model.head.depth': 2, 'model.head.flat_hidden': 64,
            'model.head.out_dim': 64, 'model.question_encoder.embed_dim': 32, 'model.question_encoder.hidden_dim': 32},
}


def _cpu_has_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels here (on AVX2-only CPUs bf16 convolutions are 2-3x slower)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _config_model(path: str, task: str, tiny: bool) -> tuple[dict, Any]:
    """``(model config, full config)`` from a config file, with pretrained weights off (and shrunk for --tiny)."""
    from attnkit import load_config
    options: dict[str, Any] = {'model.backbone.pretrained': None}
    if tiny:
        options.update(TINY_OPTIONS[task])
    cfg = load_config(os.path.join(ROOT, path), options)
    return dict(cfg.model), cfg


def _torchvision_fcos(num_classes: int, h: int, w: int, tiny: bool) -> nn.Module:
    """torchvision's FCOS R50-FPN (random weights); --tiny: the same detector on a ResNet-18."""
    from torchvision.models.detection import fcos_resnet50_fpn
    if not tiny:
        return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, min_size=h,
                                 max_size=w)
    from torchvision.models import resnet18
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    backbone = BackboneWithFPN(resnet18(), {'layer2': '0', 'layer3': '1', 'layer4': '2'}, [128, 256, 512], 32,
                               extra_blocks=LastLevelP6P7(32, 32))
    return FCOS(backbone, num_classes, min_size=h, max_size=w)


def _rand_boxes(n: int, h: int, w: int, g: torch.Generator, k: int = 8) -> list[torch.Tensor]:
    """``n`` lists of ``k`` random xyxy boxes inside an h x w image."""
    out = []
    for _ in range(n):
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 8 + torch.rand(k, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        out.append(torch.cat([xy, (xy + wh).minimum(torch.tensor([w - 1.0, h - 1.0]))], 1))
    return out


def _uint8_images(n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """(n, 3, H', W') uint8, padded with 0 to a multiple of 32 as the collate does."""
    from attnkit.data import pad_to_multiple
    return pad_to_multiple([torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for _ in range(n)],
                           32, 0)


# ----------------------------------------------------------------------------------------------- contenders
class Contender:
    """A model, its training batch and evaluation batch on the device, and how to get a loss / predictions."""

    def __init__(self, task: str, name: str, model: nn.Module, train_batch: Any, eval_batch: Any,
                 loss: Callable[[nn.Module, Any], torch.Tensor], predict: Callable[[nn.Module, Any], Any],
                 shape: str, batch: int, attnkit: bool) -> None:
        self.task, self.name, self.model, self.shape, self.batch = task, name, model, shape, batch
        self.attnkit = attnkit
        self.train_batch, self.eval_batch, self.loss, self.predict = train_batch, eval_batch, loss, predict


def _attnkit_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    return model(batch)['loss']


def _attnkit_predict(model: nn.Module, batch: Any) -> Any:
    return model(batch)


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    from attnkit.engine.utils import to_device
    return to_device(batch, device, channels_last=True)


def detection_contenders(device: torch.device, s: dict[str, Any]) -> list[Contender]:
    from attnkit import build_model
    h, w = s['det']
    n = s['det_batch']
    g = torch.Generator().manual_seed(0)
    images = _uint8_images(n, h, w, g)
    boxes = _rand_boxes(n, h, w, g)
    labels = [torch.randint(0, 80, (len(b),), generator=g) for b in boxes]
    meta = {'ori_size': (h, w), 'img_size': (h, w), 'scale_factor': (1.0, 1.0), 'pad_size': tuple(images.shape[-2:])}
    batch = {'images': images, 'boxes': boxes, 'labels': labels, 'metas': [dict(meta) for _ in range(n)],
             'ignore': [torch.zeros(len(b), dtype=torch.bool) for b in boxes]}
    cfg, _ = _config_model('configs/detection/fcos_r50_fpn_1x_coco.py', 'detection', s['tiny'])
    torch.manual_seed(0)
    model = build_model(cfg, metainfo={'classes': [f'c{i}' for i in range(80)]})
    shape = f'{h}x{w} (padded {images.shape[-2]}x{images.shape[-1]})'
    name = 'attnkit FCOS ' + ('R18-FPN (tiny)' if s['tiny'] else 'R50-FPN')
    ours = Contender('detection', name, model, _to(batch, device), _to(batch, device), _attnkit_loss,
                     _attnkit_predict, shape, n, True)

    torch.manual_seed(0)
    tv = _torchvision_fcos(81, h, w, s['tiny'])
    tv_images = [(img[:, :h, :w].float() / 255).to(device) for img in images]
    targets = [{'boxes': b.to(device), 'labels': (lab + 1).to(device)} for b, lab in zip(boxes, labels)]
    name = 'torchvision FCOS ' + ('R18-FPN (tiny)' if s['tiny'] else 'fcos_resnet50_fpn')
    theirs = Contender('detection', name, tv, (tv_images, targets), tv_images,
                       lambda m, b: sum(m(b[0], b[1]).values()), lambda m, b: m(b), shape, n, False)
    return [ours, theirs]


class TorchvisionFCN(nn.Module):
    """torchvision's FCN-ResNet50 with attnkit's segmentation loss (CE, ignore 255, auxiliary x 0.4); --tiny: FCN
    heads on a ResNet-18 (output stride 32)."""

    def __init__(self, num_classes: int, tiny: bool = False) -> None:
        super().__init__()
        from torchvision.models.segmentation import fcn_resnet50
        if not tiny:
            self.net = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=num_classes)
            return
        from torchvision.models import resnet18
        from torchvision.models._utils import IntermediateLayerGetter
        from torchvision.models.segmentation.fcn import FCN, FCNHead
        self.net = FCN(IntermediateLayerGetter(resnet18(), {'layer4': 'out', 'layer3': 'aux'}),
                       FCNHead(512, num_classes), FCNHead(256, num_classes))

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(images)
        if masks is None:
            return out['out'].argmax(1)
        ce = F.cross_entropy
        return ce(out['out'].float(), masks, ignore_index=255) + 0.4 * ce(out['aux'].float(), masks, ignore_index=255)


def segmentation_contenders(device: torch.device, s: dict[str, Any]) -> list[Contender]:
    from attnkit import build_model
    size, n = s['seg'], s['seg_batch']
    g = torch.Generator().manual_seed(1)
    images = _uint8_images(n, size, size, g)
    masks = torch.randint(0, 21, (n, size, size), generator=g)
    metas = [{'img_size': (size, size), 'ori_size': (size, size)} for _ in range(n)]
    batch = {'images': images, 'masks': masks, 'metas': metas}
    classes = {'classes': [f'c{i}' for i in range(21)]}
    out = []
    for name, path in (('FCN', 'configs/segmentation/fcn_r50-d8_voc12aug.py'),
                       ('DANet', 'configs/segmentation/danet_r50-d8_voc12aug.py')):
        cfg, _ = _config_model(path, 'segmentation', s['tiny'])
        torch.manual_seed(0)
        model = build_model(cfg, metainfo=classes)
        if name == 'DANet':  # gamma = 0 at init: give the attention branches weight, as after some training
            with torch.no_grad():
                model.decode_head.pam.gamma.fill_(0.5)
                model.decode_head.cam.gamma.fill_(0.5)
        label = f"attnkit {name} {'R18-D8 (tiny)' if s['tiny'] else 'R50-D8'}"
        out.append(Contender('segmentation', label, model, _to(batch, device), _to(batch, device), _attnkit_loss,
                             _attnkit_predict, f'{size}x{size}', n, True))
    torch.manual_seed(0)
    tv = TorchvisionFCN(21, s['tiny'])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    x = ((images.float() - mean) / std).to(device).contiguous(memory_format=torch.channels_last)
    label = 'torchvision FCN ' + ('R18 (tiny)' if s['tiny'] else 'fcn_resnet50')
    out.append(Contender('segmentation', label, tv, (x, masks.to(device)), x, lambda m, b: m(b[0], b[1]),
                         lambda m, b: m(b), f'{size}x{size}', n, False))
    return out


def vqa_contenders(device: torch.device, s: dict[str, Any]) -> list[Contender]:
    from attnkit import build_model
    size, n = s['vqa'], s['vqa_batch']
    cfg, _ = _config_model('configs/vqa/mcan_r50_gru_vqav2.py', 'vqa', s['tiny'])
    meta = {'answers': [f'a{i}' for i in range(3129)], 'tokenizer': {'type': 'word', 'max_len': 14},
            'question_vocab': ['<pad>', '<unk>'] + [f'w{i}' for i in range(2000)]}
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(4, 15, (n,), generator=g)
    ids = torch.randint(2, 2002, (n, 14), generator=g)
    mask = (torch.arange(14)[None] < lengths[:, None]).long()
    scores = torch.zeros(n, 3129)
    scores[torch.arange(n), torch.randint(0, 3129, (n,), generator=g)] = 1.0
    batch = {'images': _uint8_images(n, size, size, g), 'input_ids': ids * mask, 'attention_mask': mask,
             'answer_scores': scores, 'question_ids': list(range(n)),
             'metas': [{'img_size': (size, size)} for _ in range(n)]}
    torch.manual_seed(0)
    model = build_model(cfg, metainfo=meta)
    name = 'attnkit MCAN-' + ('R18 (tiny)' if s['tiny'] else 'R50') + ' (GRU)'
    return [Contender('vqa', name, model, _to(batch, device), _to(batch, device), _attnkit_loss, _attnkit_predict,
                      f'{size}x{size}', n, True)]


# ----------------------------------------------------------------------------------------------- timing
def _median_time(fn: Callable[[], Any], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(c: Contender, device: torch.device, bf16: bool, warmup: int, steps: int) -> dict[str, Any]:
    """Median training step (forward, backward, SGD step) and inference times in seconds; peak memory."""
    model = c.model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)

    def train_step() -> None:
        with _autocast(device, bf16):
            loss = c.loss(model, c.train_batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer() -> None:
        with torch.no_grad(), _autocast(device, bf16):
            c.predict(model, c.eval_batch)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    train = _median_time(train_step, device, warmup, steps)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else float('nan')
    model.eval()
    inference = _median_time(infer, device, warmup, steps)
    del opt
    return {'train_s': train, 'infer_s': inference, 'peak_gib': peak}


# ----------------------------------------------------------------------------------------------- SDPA probe
class SdpaProbe:
    """Records every ``F.scaled_dot_product_attention`` call under the model (innermost module, inputs)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.calls: dict[tuple, dict[str, Any]] = {}
        self._stack: list[tuple[str, str]] = []
        self._handles: list[Any] = []

    @contextlib.contextmanager
    def active(self) -> Iterator['SdpaProbe']:
        original = F.scaled_dot_product_attention
        def enter(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any) -> None:
                self._stack.append((name, type(module).__name__))
            return hook

        def leave(module: nn.Module, args: Any, output: Any) -> None:  # returns None: the output is kept
            self._stack.pop()

        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(enter(name)))
            self._handles.append(module.register_forward_hook(leave))

        def wrapper(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                    **kwargs: Any) -> torch.Tensor:
            self._record(q, k, v, attn_mask, dropout_p, is_causal, scale)
            return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                            **kwargs)

        F.scaled_dot_product_attention = wrapper
        try:
            yield self
        finally:
            F.scaled_dot_product_attention = original
            for h in self._handles:
                h.remove()
            self._handles.clear()

    def _record(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                dropout_p: float, is_causal: bool, scale: float | None) -> None:
        name, kind = self._stack[-1] if self._stack else ('?', '?')
        dev = q.device.type
        amp = torch.is_autocast_enabled(dev)
        amp_dtype = torch.get_autocast_dtype(dev) if amp else None
        key = (kind, tuple(q.shape), tuple(k.shape), tuple(v.shape), q.dtype, None if mask is None else
               (tuple(mask.shape), mask.dtype), dropout_p > 0, q.requires_grad, amp_dtype)
        if key in self.calls:
            self.calls[key]['modules'].append(name)
            return
        keep = lambda t: None if t is None else t.detach().clone()  # noqa: E731
        self.calls[key] = {'modules': [name], 'kind': kind, 'q': keep(q), 'k': keep(k), 'v': keep(v),
                           'mask': keep(mask), 'dropout_p': dropout_p, 'is_causal': is_causal, 'scale': scale,
                           'grad': q.requires_grad or k.requires_grad or v.requires_grad, 'amp_dtype': amp_dtype}


def _replay_inputs(call: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """q, k, v as the kernel sees them: autocast applies SDPA's lower-precision cast on CUDA only."""
    q, k, v = call['q'], call['k'], call['v']
    if call['amp_dtype'] is not None and q.device.type == 'cuda' and q.dtype == torch.float32:
        q, k, v = (t.to(call['amp_dtype']) for t in (q, k, v))
    return tuple(t.detach().clone().requires_grad_(call['grad']) for t in (q, k, v))


def default_backend(call: dict[str, Any]) -> str:
    """The backend PyTorch's dispatcher chooses for this call (``torch._fused_sdp_choice``)."""
    from torch.nn.attention import SDPBackend
    q, k, v = _replay_inputs(call)
    try:
        index = torch._fused_sdp_choice(q, k, v, attn_mask=call['mask'], dropout_p=call['dropout_p'],
                                        is_causal=call['is_causal'], scale=call['scale'])
    except Exception as exc:  # noqa: BLE001 - a private API: report rather than crash
        return f'unknown ({type(exc).__name__})'
    names = {int(b.value): n for n, b in SDPBackend.__members__.items()}
    return SHORT.get(names.get(int(index), str(index)), str(index))


def forced_backends(call: dict[str, Any]) -> dict[str, bool]:
    """Which backends run this call (forward, and backward when its inputs need gradients) when forced alone."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    ok = {}
    for name in BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            ok[SHORT[name]] = False
            continue
        q, k, v = _replay_inputs(call)
        try:
            with warnings.catch_warnings(), sdpa_kernel([backend]):
                warnings.simplefilter('ignore')
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=call['mask'], dropout_p=call['dropout_p'],
                                                     is_causal=call['is_causal'], scale=call['scale'])
                if call['grad']:
                    out.float().sum().backward()
            _sync(q.device)
            ok[SHORT[name]] = True
        except RuntimeError:
            ok[SHORT[name]] = False
    return ok


def probe_sdpa(c: Contender, device: torch.device, bf16: bool, strict: bool) -> list[dict[str, Any]]:
    """One training step with the probe on; one row per distinct SDPA call."""
    model = c.model.to(device).to(memory_format=torch.channels_last).train()
    probe = SdpaProbe(model)
    with probe.active():
        with _autocast(device, bf16):
            loss = c.loss(model, c.train_batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    rows = []
    for call in probe.calls.values():
        chosen = default_backend(call)
        forced = forced_backends(call)
        fused = chosen in ('flash', 'efficient', 'cudnn')
        status = 'ok' if fused else ('FAIL' if strict else f'{chosen} (not checked at --tiny sizes)')
        q, k, v = call['q'], call['k'], call['v']
        dtype = call['amp_dtype'] if (call['amp_dtype'] is not None and device.type == 'cuda'
                                      and q.dtype == torch.float32) else q.dtype
        mods = call['modules']
        rows.append({'task': c.task, 'model': c.name, 'kind': call['kind'],
                     'modules': mods[0] + (f' (+{len(mods) - 1} more)' if len(mods) > 1 else ''),
                     'calls': len(mods), 'qkv': f"q{list(q.shape)} k{list(k.shape)[-2:]} v{list(v.shape)[-1:]}",
                     'dtype': str(dtype).replace('torch.', ''),
                     'extra': ', '.join(x for x in ('mask' if call['mask'] is not None else '',
                                                    'dropout' if call['dropout_p'] > 0 else '',
                                                    'grad' if call['grad'] else '') if x) or '-',
                     'default': chosen, 'forced': forced, 'status': status})
    return rows


# ----------------------------------------------------------------------------------------------- report
def _device_line(device: torch.device) -> str:
    if device.type == 'cuda':
        p = torch.cuda.get_device_properties(device)
        return (f'{p.name} ({p.total_memory / 2 ** 30:.0f} GiB, sm_{p.major}{p.minor}), torch {torch.__version__}, '
                f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')
    return f'CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} ' \
           f'threads), torch {torch.__version__}'


def _ms(seconds: float) -> str:
    return f'{seconds * 1000:.1f}' if seconds < 10 else f'{seconds * 1000:.0f}'


def report(device: torch.device, args: argparse.Namespace, s: dict[str, Any], timings: list[dict[str, Any]],
           sdpa_rows: list[dict[str, Any]], failures: list[str], wall: float) -> str:
    precision = 'bf16 autocast' if args.dtype == 'bf16' else 'fp32'
    lines = [f"# attnkit GPU check{' (--tiny)' if args.tiny else ''}", '',
             f'- device: {_device_line(device)}',
             f'- {precision}, channels_last, random weights and data; median of {s["steps"]} timed steps after '
             f'{s["warmup"]} warm-up steps', f'- command: `{" ".join([os.path.basename(sys.executable)] + sys.argv)}`',
             f'- wall time: {wall:.0f} s', '',
             '## Training step and inference', '',
             '| task | model | input | batch | train step (ms) | inference (ms) | peak train memory (GiB) | '
             'train step vs torchvision |', '|---|---|---|---|---|---|---|---|']
    reference = {t['task']: t for t in timings if not t['attnkit'] and t.get('train_s')}
    for t in timings:
        if 'error' in t:
            lines.append(f"| {t['task']} | {t['name']} | {t['shape']} | {t['batch']} | FAIL: {t['error']} | | | |")
            continue
        ref = reference.get(t['task'])
        ratio = (f"{t['train_s'] / ref['train_s']:.2f}x ({ref['name']})" if t['attnkit'] and ref is not None
                 and t['task'] != 'vqa' else '-')
        peak = '-' if math.isnan(t['peak_gib']) else f"{t['peak_gib']:.1f}"
        lines.append(f"| {t['task']} | {t['name']} | {t['shape']} | {t['batch']} | {_ms(t['train_s'])} | "
                     f"{_ms(t['infer_s'])} | {peak} | {ratio} |")
    lines += ['', '## SDPA backend of each attention call (training step)', '',
              'default = the backend the dispatcher picks (`torch._fused_sdp_choice`); flash / efficient / cudnn / '
              'math = whether that backend alone runs the call (forward + backward) under `sdpa_kernel`.', '',
              '| task | module kind | modules | calls | q / k / v | dtype | extra | default | flash | efficient | '
              'cudnn | math | status |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in sdpa_rows:
        f = r['forced']
        yn = lambda b: 'yes' if b else 'no'  # noqa: E731
        lines.append(f"| {r['task']} | {r['kind']} | `{r['modules']}` | {r['calls']} | {r['qkv']} | {r['dtype']} | "
                     f"{r['extra']} | **{r['default']}** | {yn(f['flash'])} | {yn(f['efficient'])} | "
                     f"{yn(f['cudnn'])} | {yn(f['math'])} | {r['status']} |")
    lines += ['', f"**{'FAIL' if failures else 'PASS'}**" + (': ' + '; '.join(failures) if failures else
                                                              ': every check passed')]
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--tiny', action='store_true', help='small sizes (a few seconds on a CPU)')
    parser.add_argument('--dtype', choices=('auto', 'bf16', 'fp32'), default='auto',
                        help='auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16/AMX), else fp32')
    parser.add_argument('--tasks', nargs='+', choices=('detection', 'segmentation', 'vqa'),
                        default=['detection', 'segmentation', 'vqa'])
    parser.add_argument('--steps', type=int, help='timed steps (default 10, --tiny 1)')
    parser.add_argument('--warmup', type=int, help='warm-up steps (default 3, --tiny 0)')
    parser.add_argument('--out', help='also write the markdown report here')
    args = parser.parse_args(argv)
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from attnkit.engine.utils import resolve_device
    from attnkit.errors import AttnkitError
    try:
        device = resolve_device(args.device)
    except AttnkitError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    start = time.perf_counter()
    s = _sizes(args.tiny)
    s['steps'] = args.steps or s['steps']
    s['warmup'] = args.warmup if args.warmup is not None else s['warmup']
    if args.dtype == 'auto':
        args.dtype = 'bf16' if device.type == 'cuda' or _cpu_has_bf16() else 'fp32'
    bf16 = args.dtype == 'bf16'
    builders = {'detection': detection_contenders, 'segmentation': segmentation_contenders, 'vqa': vqa_contenders}
    timings: list[dict[str, Any]] = []
    sdpa_rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for task in args.tasks:
        for c in builders[task](device, s):
            row: dict[str, Any] = {'task': c.task, 'name': c.name, 'shape': c.shape, 'batch': c.batch,
                                   'attnkit': c.attnkit}
            try:
                if c.attnkit:
                    rows = probe_sdpa(c, device, bf16, strict=not args.tiny)
                    sdpa_rows += rows
                    failures += [f"{r['model']} {r['modules']}: SDPA runs on {r['default']}" for r in rows
                                 if r['status'] == 'FAIL']
                row.update(measure(c, device, bf16, s['warmup'], s['steps']))
            except Exception as exc:  # noqa: BLE001 - one failing model must not hide the others' figures
                row['error'] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
                failures.append(f"{c.name}: {row['error']}")
            timings.append(row)
            c.model.to('cpu')
            del c
            if device.type == 'cuda':
                torch.cuda.empty_cache()
            print(f"[{time.perf_counter() - start:5.0f} s] {row['task']}: {row['name']} done", file=sys.stderr,
                  flush=True)
    text = report(device, args, s, timings, sdpa_rows, failures, time.perf_counter() - start)
    print(text, end='')
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(text)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
