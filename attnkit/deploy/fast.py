"""The inference fast path: one call turns a trained attnkit model into its fastest equivalent for inference.

``model, report = prepare_fast(model)``:

1. eval mode; identity attention (``gamma == 0``) taken out of the graph and every batch norm that follows a
   convolution folded into it (:mod:`attnkit.deploy.fold`);
2. channels_last weights, and the backbone's input converted to channels_last;
3. ``forward`` runs without autograd (``torch.no_grad``) and, where the hardware computes bf16 natively (a CUDA
   device with bf16, or a CPU with ``avx512_bf16``/``amx_bf16``), under bf16 autocast;
4. attention modules with an inference form (``se``, ``eca``, ``cbam``, ``gc``, ``coord``) swapped for it: the
   same function with the ``gamma`` blend folded into the gate, in fewer passes over the feature map
   (:mod:`attnkit.deploy.attention_fast`); ``attention='compile'`` also compiles each form alone;
5. optionally ``torch.compile`` (inductor with weight freezing) of the backbone, neck and head.

Steps 1, 2 and 4 do not change the fp32 result beyond float rounding (about 1e-6 relative); bf16 does (about 1e-2
relative on the logits), which is why it is only on where the hardware makes it fast.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import closest_names
from .attention_fast import InferenceGate, allow_inplace, swap_inference_forms
from .fold import FoldReport, fold_batch_norms, fold_identity_attention
from .kernels import NativeKernel, kernel_status, native_kernel
from .residual_tail import fuse_residual_tails

__all__ = ['FastReport', 'prepare_fast', 'cpu_bf16_units', 'resolve_bf16', 'cast_weights_bf16', 'COMPILE_PARTS',
           'ATTENTION_MODES', 'FAST_DTYPES', 'FAST_ENTRY_POINTS']

COMPILE_PARTS: tuple[str, ...] = ('backbone', 'neck', 'head', 'decode_head', 'auxiliary_head')
_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
ATTENTION_MODES: tuple[str, ...] = ('fast', 'compile', 'eager')
NATIVE_SETTINGS: tuple[bool | str, ...] = ('auto', True, False)


@dataclass
class FastReport:
    """What :func:`prepare_fast` did.

    Attributes:
        fold: the :class:`~attnkit.deploy.fold.FoldReport` (norms folded/kept, attention folded/kept).
        device: the model's device.
        channels_last: weights and backbone input in channels_last.
        bf16: forward under bf16 autocast.
        bf16_reason: the detection behind ``bf16`` (CPU flags or CUDA support).
        compiled: submodules compiled with ``torch.compile``.
        attention_forms: ``{module name: attention type}`` of the modules swapped for their inference form.
        attention_mode: ``'fast'``, ``'compile'`` (forms compiled alone) or ``'eager'`` (no swap).
        inplace_forms: names of the forms that write into their input's buffer
            (:func:`~attnkit.deploy.attention_fast.allow_inplace`; ``'fast'`` mode without ``compile``).
        bf16_weights: convolutions and linear layers whose weights are stored in bf16 (bf16 on, not compiled:
            :func:`cast_weights_bf16`).
        fused_tails: names of the forms run with their block's residual addition and ReLU
            (:func:`~attnkit.deploy.residual_tail.fuse_residual_tails`; ``'fast'`` mode without ``compile``).
        expansion_tails: those of ``fused_tails`` that also run their bottleneck's ``conv3`` and read their
            statistics from its input (``read_expansion``).
        native_forms: names of the forms run through a native CPU kernel (``cbam``: :mod:`~attnkit.deploy.cbam_native`,
            ``gc``: :mod:`~attnkit.deploy.gc_native`, ``se``: :mod:`~attnkit.deploy.se_native`).
        native_status: where the kernels were built from, or why they are not used ('' when no form could use one).
    """

    fold: FoldReport
    device: str
    channels_last: bool
    bf16: bool
    bf16_reason: str
    compiled: list[str] = field(default_factory=list)
    attention_forms: dict[str, str] = field(default_factory=dict)
    attention_mode: str = 'fast'
    inplace_forms: list[str] = field(default_factory=list)
    fused_tails: list[str] = field(default_factory=list)
    expansion_tails: list[str] = field(default_factory=list)
    bf16_weights: int = 0
    native_forms: list[str] = field(default_factory=list)
    native_status: str = ''

    def summary(self) -> str:
        """One line for the command line's output."""
        f = self.fold
        parts = [f'folded {len(f.folded_norms)} batch norms ({len(f.kept_norms)} kept)',
                 f'{len(f.folded_attention)} identity attention modules removed ({len(f.kept_attention)} kept)',
                 self._attention_summary(),
                 f"channels_last {'on' if self.channels_last else 'off'}",
                 f"bf16 {'on' if self.bf16 else 'off'} ({self.bf16_reason})"
                 + (f', {self.bf16_weights} layers with bf16 weights' if self.bf16_weights else ''),
                 f"compiled: {', '.join(self.compiled)}" if self.compiled else 'not compiled']
        return f'fast path on {self.device}: ' + '; '.join(parts)

    def _attention_summary(self) -> str:
        if self.attention_mode == 'eager':
            return 'attention modules eager (no inference forms)'
        counts: dict[str, int] = {}
        for kind in self.attention_forms.values():
            counts[kind] = counts.get(kind, 0) + 1
        detail = f" ({', '.join(f'{k} {n}' for k, n in counts.items())})" if counts else ''
        done = ', compiled alone' if self.attention_mode == 'compile' and counts else ''
        own = f', {len(self.inplace_forms)} in place' if self.inplace_forms else ''
        own += f', {len(self.fused_tails)} fused with the residual addition' if self.fused_tails else ''
        own += f" ({len(self.expansion_tails)} reading conv3's input)" if self.expansion_tails else ''
        if self.native_forms:
            own += f', {len(self.native_forms)} through the native CPU kernel'
        elif self.native_status:
            own += f', native CPU kernel not used: {self.native_status}'
        return f'{len(self.attention_forms)} attention modules in inference form{detail}{done}{own}'


def _cpuinfo_flags(path: str = '/proc/cpuinfo') -> set[str] | None:
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return set(line.split(':', 1)[1].split())
    except OSError:
        return None
    return set()


def cpu_bf16_units(cpuinfo: str = '/proc/cpuinfo') -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16``), and what was detected.

    Reads the CPU flags from ``cpuinfo`` (Linux) and names torch's CPU capability (``AVX2``, ``AVX512``, ...).
    Without native units, bf16 autocast on the CPU is emulated and slower than fp32.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _cpuinfo_flags(cpuinfo)
    if flags is None:  # not Linux: AMX-capable builds report it in torch's capability
        native = 'AMX' in capability.upper()
        return native, f'torch CPU capability {capability}, no {cpuinfo}'
    found = [f for f in _BF16_FLAGS if f in flags]
    if found:
        return True, f"CPU has {', '.join(found)}; torch CPU capability {capability}"
    return False, f"CPU lacks {' and '.join(_BF16_FLAGS)} (torch CPU capability {capability})"


def resolve_bf16(setting: bool | str, device: torch.device) -> tuple[bool, str]:
    """``bf16`` = True / False / ``'auto'`` (CUDA with bf16, or a CPU with bf16 units) -> (on, why)."""
    if setting not in (True, False, 'auto'):
        raise ConfigError(f"prepare_fast: bf16 must be True, False or 'auto', got {setting!r}.")
    if device.type == 'cuda':
        supported = torch.cuda.is_bf16_supported()
        why = f"CUDA {torch.cuda.get_device_name(device)} {'supports' if supported else 'lacks'} bf16"
        if setting == 'auto':
            return supported, why
        return bool(setting), why + ('' if setting == supported else f'; bf16={setting} requested')
    if device.type != 'cpu':
        return setting is True, f'device {device.type}: bf16 only on request'
    native, why = cpu_bf16_units()
    if setting == 'auto':
        return native, why
    return bool(setting), why + ('' if setting == native else f'; bf16={setting} requested')


def _to_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Forward pre-hook: a 4-D first argument goes in as channels_last."""
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


# ``--fast-dtype`` of the command line and the benchmarks -> prepare_fast's ``bf16``
FAST_DTYPES: dict[str, bool | str] = {'auto': 'auto', 'fp32': False, 'bf16': True}
# the modules whose weights bf16 autocast casts at every call (conv*, linear are on its lower-precision list)
_AUTOCAST_WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                          nn.ConvTranspose3d, nn.Linear)
# model methods that run the network for inference: each runs under the fast path's no_grad + autocast
FAST_ENTRY_POINTS = ('forward', 'predict_all')


def cast_weights_bf16(model: nn.Module) -> int:
    """Store the weights and biases of ``model``'s convolutions and linear layers in bf16, once; in place.

    Under bf16 autocast these are cast at every call (a copy of every weight per forward: ~6 % of a ResNet-50's
    time at 512² on a CPU with bf16 units, measured); stored in bf16 the cast is skipped and the result is the
    same bits. The layers must then run under bf16 autocast (the fast path's entry points do). Layers inside
    ``nn.MultiheadAttention`` (whose packed input projection is not a module) and inside the attention inference
    forms (whose gate layers run in fp32: :func:`~attnkit.deploy.attention_fast.fp32_gate_math`) are left as
    they are.

    Returns:
        How many layers were converted.
    """
    skip = {id(m) for holder in model.modules() if isinstance(holder, (nn.MultiheadAttention, InferenceGate))
            for m in holder.modules()}
    count = 0
    for module in model.modules():
        if not isinstance(module, _AUTOCAST_WEIGHT_TYPES) or id(module) in skip:
            continue
        for param in (module.weight, module.bias):
            if param is not None and param.dtype == torch.float32:
                param.data = param.data.to(torch.bfloat16)
        count += 1
    return count


class _FastEntry:
    """A model's entry point (``forward``, ``predict_all``) on the fast path: the method under ``torch.no_grad`` and
    the bf16 autocast decided by :func:`prepare_fast`, set as an instance attribute of the model.

    It holds the model, not a bound method, so that a deep copy of the prepared model (its ``__dict__`` copied with
    the memo) calls the copy: a closure over the bound method would keep calling the original."""

    _attnkit_fast = True

    def __init__(self, model: nn.Module, entry: str, device_type: str, bf16: bool) -> None:
        method = getattr(model, entry)
        bound = getattr(method, '__self__', None) is model
        self.model = model
        # the class's function called on self.model, or a callable set on the instance before (kept as it is)
        self.function = method.__func__ if bound else method
        self.bound = bound
        self.device_type, self.bf16 = device_type, bf16
        functools.update_wrapper(self, method)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.bound:
                return self.function(self.model, *args, **kwargs)
            return self.function(*args, **kwargs)


def prepare_fast(model: nn.Module, *, bf16: bool | str = 'auto', channels_last: bool = True,
                 compile: bool = False, fold_attention: bool = True,
                 compile_parts: Sequence[str] = COMPILE_PARTS, compile_mode: str | None = None,
                 attention: str = 'fast', fuse_residual: bool = True,
                 read_expansion: bool = True, native: bool | str = 'auto') -> tuple[nn.Module, FastReport]:
    """Make ``model`` (an attnkit task model or any module) fast for inference; in place.

    Args:
        model: the model, on its final device.
        bf16: ``'auto'`` (bf16 autocast on CUDA with bf16 and on CPUs with bf16 units, see
            :func:`cpu_bf16_units`), True or False.
        channels_last: convert weights (and the backbone's input) to channels_last.
        compile: ``torch.compile`` the parts named in ``compile_parts`` (the whole model when it has none of
            them) with inductor and weight freezing; the first call(s) of each input shape compile (minutes on
            a CPU for a ResNet-50 model).
        fold_attention: take identity attention (``gamma == 0``) out of the graph.
        compile_parts: attribute names of the submodules to compile.
        compile_mode: ``torch.compile`` mode (e.g. ``'max-autotune'``); None = default.
        attention: ``'fast'``: swap attention modules (se, eca, cbam, gc, coord; after identity ones are removed)
            for their inference form (:mod:`attnkit.deploy.attention_fast`, same output within float rounding);
            ``'compile'``: also ``torch.compile`` each form alone (seconds per form and input shape; not with
            ``compile=True``, which compiles them inside the parts); ``'eager'``: leave them as they are.
        fuse_residual: in ``'fast'`` mode without ``compile``, run each attention gate placed before a ResNet
            block's residual addition together with the addition and the ReLU (one pass fewer over the map,
            :func:`~attnkit.deploy.residual_tail.fuse_residual_tails`).
        read_expansion: with ``fuse_residual``, a form in a bottleneck also runs its folded 1x1 ``conv3`` and reads
            its statistics from conv3's input, a quarter of the map (:mod:`attnkit.deploy.map_stats`).
        native: in ``'fast'`` mode without ``compile``, run the forms that have one through a native CPU kernel
            (``cbam``: :mod:`attnkit.deploy.cbam_native`, built with the system's C compiler on first use):
            ``'auto'`` where the model is on the CPU and the kernel builds, True (the same, an error where it does
            not build), False never.

    Returns:
        ``(model, report)``: the same module object (``forward`` and ``predict_all``, where the model has it, now
        run under ``torch.no_grad`` and the bf16 autocast decided here) and a :class:`FastReport`. Inputs and
        outputs are unchanged: a Detector still takes a batch dict and returns per-image boxes. With bf16 on (not
        compiled) the convolution and linear weights are stored in bf16 (:func:`cast_weights_bf16`), so call the
        model through those entry points, not its submodules alone.
    """
    if getattr(model.forward, '_attnkit_fast', False):
        raise ConfigError('prepare_fast: this model has been prepared already.')
    if attention not in ATTENTION_MODES:
        close = closest_names(str(attention), ATTENTION_MODES)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise ConfigError(f"prepare_fast: attention {attention!r} is not one of "
                          f"{', '.join(map(repr, ATTENTION_MODES))}.{hint}")
    if native not in NATIVE_SETTINGS:
        raise ConfigError(f"prepare_fast: native must be 'auto', True or False, got {native!r}.")
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    fold = FoldReport()
    if fold_attention:
        fold_identity_attention(model, fold)
    fold_batch_norms(model, fold)
    if attention == 'compile' and compile:
        attention = 'fast'  # the compiled parts compile the forms inside them
    forms = {} if attention == 'eager' else swap_inference_forms(
        model, compile=attention == 'compile', for_compiler=compile)
    eager_forms = attention == 'fast' and not compile  # a compiled graph fuses the passes itself
    # fused tails first: the forms they take over are no longer attached, so allow_inplace leaves them alone
    tails = fuse_residual_tails(model, expansion=read_expansion) if eager_forms and fuse_residual else []
    through = [n for n in tails if model.get_submodule(n.rpartition('.')[0]).attn_reads_expansion]
    inplace = allow_inplace(model, set(fold.folded_norms)) if eager_forms else []
    natives, native_status = use_native_kernels(model, native, device) if eager_forms else ([], '')
    if channels_last:
        model.to(memory_format=torch.channels_last)
        entry = getattr(model, 'backbone', None)
        (entry if isinstance(entry, nn.Module) else model).register_forward_pre_hook(_to_channels_last)
    on, why = resolve_bf16(bf16, device)
    compiled: list[str] = []
    if compile:
        kwargs: dict[str, Any] = {'options': {'freezing': True}} if compile_mode is None else {'mode': compile_mode}
        parts = [p for p in compile_parts if isinstance(getattr(model, p, None), nn.Module)]
        for name in parts:
            getattr(model, name).compile(**kwargs)
        if not parts:
            model.compile(**kwargs)
            parts = ['(whole model)']
        compiled = parts
    cast = cast_weights_bf16(model) if on and not compile else 0
    for entry in FAST_ENTRY_POINTS:  # instance attributes: nn.Module calls forward, callers call predict_all
        method = getattr(model, entry, None)
        if callable(method):
            setattr(model, entry, _FastEntry(model, entry, device.type, on))
    return model, FastReport(fold=fold, device=str(device), channels_last=channels_last, bf16=on,
                             bf16_reason=why, compiled=compiled, attention_forms=forms, attention_mode=attention,
                             inplace_forms=inplace, fused_tails=tails, expansion_tails=through,
                             bf16_weights=cast, native_forms=natives, native_status=native_status)


def use_native_kernels(model: nn.Module, setting: bool | str, device: torch.device) -> tuple[list[str], str]:
    """Give every inference form of ``model`` that has a native CPU kernel (``use_native``; ``kernel_binding``, a
    :class:`~attnkit.deploy.kernels.NativeKernel` subclass) that kernel; in place.

    Args:
        setting: ``'auto'``, True or False (see :func:`prepare_fast`'s ``native``).

    Returns:
        (the names of the forms that run through one, a one-line status: the builds, or why not; '' when no form
        of the model has a kernel).
    """
    forms = [(name, m) for name, m in model.named_modules() if callable(getattr(m, 'use_native', None))]
    if not forms:
        return [], ''
    if setting is False:
        return [], 'off (native=False)'
    if device.type != 'cpu':
        return [], f'the model is on {device.type}, the kernels are for the CPU'
    kernels: dict[type, NativeKernel | None] = {}
    statuses: list[str] = []
    for binding in sorted({m.kernel_binding for _, m in forms}, key=lambda b: b.name):
        kernels[binding] = native_kernel(binding)
        status = kernel_status(binding.name)
        if kernels[binding] is None and setting is True:
            raise ConfigError(f'prepare_fast: native=True, but the {binding.name} kernel is not available: {status}.')
        if status not in statuses:
            statuses.append(status)
    return [name for name, m in forms if m.use_native(kernels[m.kernel_binding])], '; '.join(statuses)

