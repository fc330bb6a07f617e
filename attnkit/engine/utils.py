"""Small helpers of the engine: config sections with defaults, custom imports, moving batches to a device."""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Mapping

import torch

from ..errors import ConfigError

__all__ = ['DEFAULT_RUNTIME', 'DEFAULT_OPTIM', 'DEFAULT_SCHEDULE', 'DEFAULT_TRAIN_CFG', 'section',
           'import_custom_modules', 'to_device', 'resolve_device']

# The defaults of configs/_base_/default_runtime.py, used for keys a config leaves out.
DEFAULT_RUNTIME: dict[str, Any] = dict(seed=0, deterministic=False, mixed_precision='no', channels_last='auto',
                                       sync_bn=False, log_interval=20, find_unused_parameters=False,
                                       tensorboard=True, report=True)
DEFAULT_OPTIM: dict[str, Any] = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4),
                                     lr_mult=dict(), no_decay=('norm', 'bias', 'pos'), grad_clip=None,
                                     accumulate_steps=1)
DEFAULT_SCHEDULE: dict[str, Any] = dict(by_epoch=True, max_epochs=12, max_iters=None, warmup_iters=500,
                                        warmup_ratio=0.001, policy='step', milestones=(8, 11), gamma=0.1,
                                        power=0.9, min_lr_ratio=0.0)
DEFAULT_TRAIN_CFG: dict[str, Any] = dict(eval_interval=1, checkpoint_interval=1, keep_ckpts=0, ema=None,
                                         early_stopping=None, max_nonfinite_steps=10, best_metric=None)


def section(cfg: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg[name]`` as a plain dict over ``defaults``; an unknown key is a ConfigError naming the closest one."""
    from ..registry import closest_names
    given = dict(cfg.get(name) or {})
    for key in given:
        if key not in defaults:
            close = closest_names(key, list(defaults))
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f"Unknown key {name}.{key} in the config.{hint} Known: {', '.join(defaults)}.")
    out = dict(defaults)
    out.update(given)
    return out


def import_custom_modules(cfg: Mapping[str, Any]) -> None:
    """Import ``cfg.custom_imports.imports`` (modules that register extra datasets, models, metrics)."""
    custom = cfg.get('custom_imports') or {}
    for name in custom.get('imports', ()):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if custom.get('allow_failed_imports', False):
                continue
            raise ConfigError(f'custom_imports: cannot import {name!r}: {exc}') from exc


def resolve_channels_last(setting: Any, device: torch.device, *, training: bool) -> bool:
    """Whether to run in channels_last memory format.

    ``runtime.channels_last`` may be True, False or ``'auto'`` (the default). ``'auto'`` is True on CUDA (tensor
    cores want NHWC) and, on the CPU, True for inference only: measured on a 2-core AVX2 CPU, channels_last made
    inference 5-15% faster but a training step 17-19% slower (convolution backward in NHWC), see
    docs/benchmarks.md.
    """
    if isinstance(setting, str):
        if setting != 'auto':
            raise ConfigError(f"runtime.channels_last must be True, False or 'auto', got {setting!r}.")
        return device.type == 'cuda' or not training
    return bool(setting)


def channels_last_unsafe_convs(model: torch.nn.Module) -> list[str]:
    """Names of ``model``'s convolutions whose channels_last backward corrupts memory on the CPU.

    Found with torch 2.14.1 on an AVX2 CPU: oneDNN's ``brgconv_strided`` backward-data kernel of a 1x1
    convolution with stride 2 and 2-6 input channels, in channels_last, writes past its buffer (glibc then aborts
    with "corrupted double-linked list" / "free(): invalid size", or the process dies later). ResNets with
    ``base_channels`` below 8 have such downsample convolutions. Matched conservatively: 1x1 kernel, a stride
    above 1, fewer than 8 input channels, ``groups=1``.
    """
    names = []
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1)
                and max(module.stride) > 1 and module.in_channels < 8 and module.groups == 1):
            names.append(name)
    return names


def training_channels_last(setting: Any, device: torch.device, model: torch.nn.Module) -> bool:
    """Whether to train ``model`` in channels_last on ``device``: :func:`resolve_channels_last` of ``setting``, except
    on the CPU when the model has :func:`channels_last_unsafe_convs` (then False, with a warning naming them)."""
    if not resolve_channels_last(setting, device, training=True):
        return False
    unsafe = channels_last_unsafe_convs(model) if device.type == 'cpu' else []
    if unsafe:
        more = f' and {len(unsafe) - 3} more' if len(unsafe) > 3 else ''
        warnings.warn(f"runtime.channels_last=True is ignored for this CPU training: oneDNN's channels_last "
                      f"backward of a 1x1 stride-2 convolution with fewer than 8 input channels corrupts "
                      f"memory (torch 2.14, AVX2); the model has {', '.join(unsafe[:3])}{more}. Training "
                      f"runs in NCHW (on the CPU also the faster layout for training, docs/benchmarks.md).")
        return False
    return True


def to_device(obj: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor in ``obj`` (recursively through dicts, lists, tuples) to ``device``.

    Dtypes are kept: ``images`` (N, 3, H, W) cross as uint8 (a quarter of float32's bytes) and the model
    normalises them on ``device``. The 4-D tensor under the key ``images`` becomes channels_last (on the
    device, after the copy) when ``channels_last`` is set; the model's normaliser keeps that layout.
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        out = {k: to_device(v, device) for k, v in obj.items()}
        images = out.get('images')
        if channels_last and isinstance(images, torch.Tensor) and images.dim() == 4:
            out['images'] = images.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_device(v, device) for v in obj)
    return obj


def resolve_device(name: str | None) -> torch.device:
    """The device of a ``--device`` option: ``None`` means CUDA when available, else the CPU.

    Raises:
        ConfigError: a name torch does not parse, or a device this machine does not have (no CUDA, a CUDA
            index out of range, no MPS).
    """
    if name is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device {name!r} is not a device name (use 'cpu', 'cuda' or 'cuda:N').") from exc
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f'--device {name}: CUDA is not available on this machine (torch {torch.__version__}, '
                              f'CUDA build {torch.version.cuda or "none"}); use --device cpu.')
        if device.index is not None and device.index >= count:
            raise ConfigError(f'--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1}).')
    elif device.type == 'mps':
        if not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
            raise ConfigError(f'--device {name}: MPS is not available on this machine; use --device cpu.')
    elif device.type != 'cpu':
        raise ConfigError(f"--device {name}: unsupported device type {device.type!r} (use 'cpu', 'cuda' or "
                          "'cuda:N').")
    return device
