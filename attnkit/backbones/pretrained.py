"""Loading pretrained backbone weights from a local file or the torchvision weights cache.

Nothing here downloads. ``torchvision://resnet50`` reads the file torchvision itself would have cached,
``<torch.hub.get_dir()>/checkpoints/resnet50-11ad3fa6.pth`` (``$TORCH_HOME/hub/checkpoints/...``); when
it is absent the :class:`~attnkit.errors.CheckpointError` says which file to put where.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

__all__ = ['TORCHVISION_PREFIX', 'LoadReport', 'resolve_pretrained', 'torchvision_cache_file',
           'read_state_dict', 'strip_prefixes', 'load_pretrained']

logger = logging.getLogger('attnkit.backbones')

TORCHVISION_PREFIX = 'torchvision://'
STRIP_PREFIXES = ('module.', 'backbone.')


@dataclass
class LoadReport:
    """What a pretrained load did: the file read and the keys that did not match the model."""

    file: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def torchvision_cache_file(name: str) -> tuple[Path, str]:
    """The cache path and download URL of ``torchvision://name`` (``name`` like ``resnet50`` or
    ``resnet50.IMAGENET1K_V2``; the default weights tag is ``IMAGENET1K_V1``).

    Raises:
        CheckpointError: unknown model name or weights tag.
    """
    from torchvision.models import get_model_weights, list_models

    model_name, _, tag = name.partition('.')
    tag = tag or 'IMAGENET1K_V1'
    try:
        weights_enum = get_model_weights(model_name)
    except (ValueError, KeyError):
        resnets = [m for m in list_models() if 'resn' in m]
        raise CheckpointError(f"Unknown torchvision model {model_name!r} in '{TORCHVISION_PREFIX}{name}'; "
                              f"ResNet-family names: {', '.join(resnets)}.") from None
    try:
        weights = weights_enum[tag]
    except KeyError:
        tags = [w.name for w in weights_enum]
        raise CheckpointError(f"torchvision model {model_name!r} has no weights {tag!r}; "
                              f"available: {', '.join(tags)}.") from None
    file_name = os.path.basename(weights.url)
    return Path(torch.hub.get_dir()) / 'checkpoints' / file_name, weights.url


def resolve_pretrained(spec: str | os.PathLike) -> Path:
    """The local file behind ``spec`` (a path, or ``torchvision://<model>[.<WEIGHTS_TAG>]``).

    Raises:
        CheckpointError: the file does not exist (for ``torchvision://``: which file to put where).
    """
    text = os.fspath(spec)
    if text.startswith(TORCHVISION_PREFIX):
        path, url = torchvision_cache_file(text[len(TORCHVISION_PREFIX):])
        if not path.is_file():
            raise CheckpointError(
                f"Pretrained weights {text!r} are not in the torchvision cache: put {path.name} (downloadable "
                f"from {url}) at {path}. The folder is torch.hub.get_dir()/checkpoints (set TORCH_HOME to "
                "move it); attnkit never downloads weights.")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        hint = f" (the only URL-like form is '{TORCHVISION_PREFIX}<model>')" if '://' in text else ''
        raise CheckpointError(f"Pretrained weights file {text!r} does not exist{hint}.")
    return path


def _load_object(path: Path) -> Any:
    """The raw content of a .safetensors file (a dict of tensors) or a torch pickle (weights only)."""
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device='cpu')
        except Exception as exc:  # SafetensorError, OSError, ...: all mean an unreadable file
            raise CheckpointError(f"Cannot read {path} as safetensors: {exc}") from None
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError,
            ImportError, TypeError) as exc:
        raise CheckpointError(f"Cannot read {path} as a PyTorch checkpoint (torch.load with weights_only=True "
                              f"failed: {_reason(exc)}). The file is corrupt, is not a checkpoint, or holds Python "
                              "objects other than tensors and plain containers.") from None


def _reason(exc: BaseException) -> str:
    """The informative line of a torch.load error (its weights-only message wraps the real cause)."""
    text = str(exc)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from a .pth/.pt/.safetensors file: the raw dict, or the one under ``'state_dict'`` or
    ``'model'`` (attnkit and mmengine checkpoints).

    Raises:
        CheckpointError: unreadable file, or content that is not a mapping of names to tensors.
    """
    path = Path(path)
    obj = _load_object(path)
    if isinstance(obj, Mapping):
        for key in ('state_dict', 'model'):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of parameter "
                              "names to tensors, optionally under 'state_dict' or 'model').")
    if not obj:
        raise CheckpointError(f"{path} holds an empty state dict.")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{path} is not a state dict: entry {key!r} holds a {type(value).__name__}, "
                                  "expected a tensor (looked under 'state_dict' and 'model' too).")
    return dict(obj)


def strip_prefixes(state_dict: Mapping[str, Tensor], prefixes: tuple[str, ...] = STRIP_PREFIXES
                   ) -> dict[str, Tensor]:
    """Remove wrapper prefixes: ``module.`` (DataParallel/DDP) from every key that has it, and
    ``backbone.`` (a whole detector/segmentor checkpoint): when any key has it, only those keys are kept.
    """
    sd = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            hits = [k for k in sd if k.startswith(prefix)]
            if not hits:
                continue
            changed = True
            if prefix == 'module.':
                sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
            else:
                dropped = len(sd) - len(hits)
                if dropped:
                    logger.info('Pretrained: kept the %d %r keys, ignored %d keys of other parts.', len(hits),
                                prefix, dropped)
                sd = {k[len(prefix):]: sd[k] for k in hits}
    return sd


def _short(keys: list[str], limit: int = 12) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def load_pretrained(model: nn.Module, spec: str | os.PathLike, *,
                    expected_missing: Callable[[str], bool] = lambda key: False,
                    expected_unexpected: Callable[[str], bool] = lambda key: False) -> LoadReport:
    """Load ``spec`` (path or ``torchvision://name``) into ``model`` and report mismatched keys.

    Args:
        model: the module to load into (its ``state_dict`` names are the target).
        spec: a .pth/.pt/.safetensors file or ``torchvision://<model>[.<WEIGHTS_TAG>]``.
        expected_missing: keys the model has and the file cannot (e.g. new attention parameters); they are
            logged at INFO level, other missing keys at WARNING.
        expected_unexpected: file keys the model does not need (e.g. ``fc.*``); INFO, others WARNING.

    Returns:
        A :class:`LoadReport` with the loaded, missing and unexpected keys.

    Raises:
        CheckpointError: missing/unreadable/malformed file, no key in common with the model, or a
            parameter whose shape differs (naming the key and both shapes).
    """
    path = resolve_pretrained(spec)
    state_dict = strip_prefixes(read_state_dict(path))
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                  if k in own and v.shape != own[k].shape]
    if mismatched:
        details = '; '.join(f'{k!r}: {a} in the file, {b} in the model' for k, a, b in mismatched[:5])
        more = f' (and {len(mismatched) - 5} more)' if len(mismatched) > 5 else ''
        raise CheckpointError(f"Pretrained weights {os.fspath(spec)!r} ({path}) do not fit the model: shape "
                              f"mismatch for {details}{more}. Check depth, groups, width_per_group, "
                              "base_channels and in_channels.")
    common = [k for k in state_dict if k in own]
    if not common:
        raise CheckpointError(f"Pretrained weights {os.fspath(spec)!r} ({path}) share no parameter name with the "
                              f"model (file keys start: {_short(sorted(state_dict), 5)}).")
    result = model.load_state_dict(state_dict, strict=False)
    report = LoadReport(str(path), common, list(result.missing_keys), list(result.unexpected_keys))
    for keys, expected, what in ((report.missing, expected_missing, 'missing from the file (left as initialised)'),
                                 (report.unexpected, expected_unexpected, 'in the file but not in the model')):
        usual = [k for k in keys if expected(k)]
        odd = [k for k in keys if not expected(k)]
        if usual:
            logger.info('Pretrained %s: %d keys %s, as expected: %s', path.name, len(usual), what, _short(usual))
        if odd:
            logger.warning('Pretrained %s: %d keys %s: %s', path.name, len(odd), what, _short(odd))
    logger.info('Pretrained %s: loaded %d of %d model tensors.', path.name, len(common), len(own))
    return report
