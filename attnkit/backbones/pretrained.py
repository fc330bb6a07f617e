"""Loading pretrained backbone weights from a local file or the torchvision weights cache.

timm ResNet-family files (``seresnet50``, ``ecaresnet50d``, ...) load too: their keys are mapped to attnkit's
(:mod:`attnkit.backbones.timm_keys`). Attention modules whose weights come from the file keep their pretrained
function (their identity-init ``gamma`` is set to 1 unless the file holds it); the others stay identity-initialised.

Any attnkit task checkpoint loads too (an ``ImageClassifier``, ``Detector``, ``Segmentor`` or ``VQAModel``
``latest.pth``/``best.pth`` -- EMA weights when it has them -- or ``model.safetensors``): only its ``backbone.*``
tensors are taken, the rest (``neck.*``, ``head.*``, ...) is dropped and listed in :attr:`LoadReport.dropped`.
Inserted attention that was trained with the checkpoint keeps its weights and ``gamma``.

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
from typing import Any, Callable, Collection, Mapping

import torch
from torch import Tensor, nn

from ..attention.base import AttentionModule
from ..errors import CheckpointError
from .resnet_fit import depth_mismatch, describe_resnet, first_shape_mismatch
from .timm_keys import adapt_timm_resnet_keys

__all__ = ['TORCHVISION_PREFIX', 'LoadReport', 'resolve_pretrained', 'torchvision_cache_file',
           'read_state_dict', 'strip_prefixes', 'take_backbone', 'BackbonePart', 'key_groups',
           'describe_source', 'load_pretrained', 'settle_attention']

logger = logging.getLogger('attnkit.backbones')

TORCHVISION_PREFIX = 'torchvision://'
STRIP_PREFIXES = ('module.', 'backbone.')
BACKBONE_PREFIX = 'backbone.'


@dataclass
class LoadReport:
    """What a pretrained load did: the file read and the keys that did not match the model.

    Attributes:
        file: the file read.
        loaded: model keys given a value from the file.
        missing: model keys the file lacks (left as initialised).
        unexpected: file keys (after the timm key mapping) the model does not have.
        skipped: file keys deliberately not loaded, each with the reason (a timm deep stem or average-pool
            shortcut that attnkit's ResNet computes differently).
        attention_loaded: attention modules whose weights came from the file (pretrained function kept:
            identity-init ``gamma`` set to 1, or loaded from the file).
        attention_identity: attention modules absent from the file (identity-initialised when built so).
        prefix: the part of a task checkpoint that was taken (``'backbone.'``), ``''`` for a plain backbone
            state dict.
        dropped: file keys outside that part (a task model's ``neck.*``, ``head.*``, ...), not loaded.
    """

    file: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    attention_loaded: list[str] = field(default_factory=list)
    attention_identity: list[str] = field(default_factory=list)
    prefix: str = ''
    dropped: list[str] = field(default_factory=list)


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
    ``'model'`` (attnkit and mmengine checkpoints). An attnkit training checkpoint with EMA weights gives the
    EMA weights (``ckpt['ema']['state']``: the weights that were evaluated and written to ``model.safetensors``).

    Raises:
        CheckpointError: unreadable file, or content that is not a mapping of names to tensors.
    """
    path = Path(path)
    obj = _load_object(path)
    ema = obj.get('ema') if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping) else None
    if isinstance(ema, Mapping) and isinstance(ema.get('state'), Mapping) and ema['state']:
        logger.info('Pretrained %s: an attnkit training checkpoint with EMA weights; took the EMA weights.',
                    path.name)
        obj = ema['state']
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


@dataclass
class BackbonePart:
    """The backbone tensors of a checkpoint (:func:`take_backbone`).

    Attributes:
        state: backbone keys (prefix removed) -> tensors.
        prefix: the prefix taken (``'backbone.'``), ``''`` for a plain backbone file.
        dropped: the file keys outside the backbone (``neck.*``, ``head.*``, ...).
    """

    state: dict[str, Tensor]
    prefix: str = ''
    dropped: list[str] = field(default_factory=list)


def _strip_wrappers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DataParallel/DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes from every key."""
    sd = dict(state_dict)
    for _ in range(4):
        wrapper = next((w for w in ('module.', '_orig_mod.') if any(k.startswith(w) for k in sd)), None)
        if wrapper is None:
            break
        sd = {k.removeprefix(wrapper): v for k, v in sd.items()}
    return sd


def take_backbone(state_dict: Mapping[str, Tensor]) -> BackbonePart:
    """The backbone part of a checkpoint: a whole attnkit task model's ``backbone.*`` tensors (every task model,
    the multi-task one included, keeps its backbone there), or the tensors of a plain backbone state dict.

    ``module.``/``_orig_mod.`` wrapper prefixes are removed first. Then, when some key starts with ``backbone.``,
    only those keys are kept (prefix removed) and the others are dropped; else the state dict is a plain
    backbone's and comes back whole.

    Args:
        state_dict: file keys -> tensors.
    """
    sd = _strip_wrappers(state_dict)
    if not any(k.startswith(BACKBONE_PREFIX) for k in sd):
        return BackbonePart(sd)
    taken = _strip_wrappers({k[len(BACKBONE_PREFIX):]: v for k, v in sd.items() if k.startswith(BACKBONE_PREFIX)})
    return BackbonePart(taken, BACKBONE_PREFIX, [k for k in sd if not k.startswith(BACKBONE_PREFIX)])


def key_groups(keys: Collection[str], limit: int = 6) -> str:
    """``'head.* (4), neck.* (2)'``: the first name segments of ``keys`` with their counts, most frequent first."""
    counts: dict[str, int] = {}
    for key in keys:
        group = key.split('.', 1)[0] + ('.*' if '.' in key else '')
        counts[group] = counts.get(group, 0) + 1
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ', '.join(f'{g} ({n})' for g, n in items[:limit])
    return text + (f', ... ({len(items) - limit} more groups)' if len(items) > limit else '')


def _short(keys: list[str], limit: int = 12) -> str:
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def _layout_hint(mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], arch: str = '') -> str:
    """A hint when a mismatch is the 1x1-conv (timm) vs Linear (attnkit) attention layout, else ``arch`` (what each
    side is, :func:`_arch_hint`), else which settings to check."""
    for _, file_shape, model_shape in mismatched:
        if len(file_shape) == 4 and file_shape[2:] == (1, 1) and file_shape[:2] == model_shape:
            return (" The file holds timm's attention layout (1x1 convs): build the attention with "
                    "layout='timm' (e.g. attention=dict(type='se', layout='timm')).")
        if len(model_shape) == 4 and model_shape[2:] == (1, 1) and model_shape[:2] == file_shape:
            return (" The file holds attnkit's attention layout (Linear layers): build the attention with "
                    "layout='attnkit' (the default).")
    return arch or ' Check depth, groups, width_per_group, base_channels and in_channels.'


def settle_attention(model: nn.Module, file_keys: Collection[str]) -> tuple[list[str], list[str]]:
    """Keep the pretrained function of every attention module whose weights came from the file.

    A module counts as loaded from the file when the file held all of its tensors (``gamma`` and
    ``num_batches_tracked`` aside) or its ``gamma``. A loaded identity-initialised module (``gamma = 0``) gets
    ``gamma = 1`` unless the file held its gamma, so it computes the file's function; modules absent from the file
    keep their initialisation (the exact identity when built with ``identity_init=True``). A module with only
    some of its tensors in the file stays as initialised, with a warning.

    Args:
        model: the model just loaded.
        file_keys: the (model-named) keys the file provided.

    Returns:
        ``(loaded, identity)``: names of the attention modules loaded from the file and of those not.
    """
    keys = set(file_keys)
    loaded: list[str] = []
    identity: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, AttentionModule):
            continue
        prefix = f'{name}.' if name else ''
        needed = [prefix + k for k in module.state_dict()
                  if k != 'gamma' and not k.endswith('num_batches_tracked')]
        present = [k for k in needed if k in keys]
        has_gamma = prefix + 'gamma' in keys
        if has_gamma or (needed and len(present) == len(needed)):
            loaded.append(name)
            if module.gamma is not None and module.identity_init and not has_gamma:
                with torch.no_grad():
                    module.gamma.fill_(1.0)
        else:
            if present:
                missing = [k for k in needed if k not in keys]
                logger.warning('Pretrained: attention module %s has only %d of its %d tensors in the file (lacking '
                               '%s); it keeps its initialisation (gamma=%s).', name, len(present), len(needed),
                               _short(missing, 3), 'none' if module.gamma is None else float(module.gamma.detach()))
            identity.append(name)
    return loaded, identity


def load_pretrained(model: nn.Module, spec: str | os.PathLike, *,
                    expected_missing: Callable[[str], bool] = lambda key: False,
                    expected_unexpected: Callable[[str], bool] = lambda key: False) -> LoadReport:
    """Load ``spec`` (path or ``torchvision://name``) into ``model`` and report mismatched keys.

    A task checkpoint gives its ``backbone.*`` part (:func:`take_backbone`; the rest is in
    ``LoadReport.dropped``). timm ResNet-family keys are mapped first
    (:func:`~attnkit.backbones.timm_keys.adapt_timm_resnet_keys`: ``layerX.Y.se.*`` -> ``layerX.Y.attn.*``; a deep
    stem and average-pool shortcuts are skipped, see ``LoadReport.skipped``). After the load, attention modules found
    in the file keep their pretrained function (:func:`settle_attention`: identity-init ``gamma`` set to 1 unless
    the file holds it); the others stay identity-initialised. Both lists are in the report and the log.

    Args:
        model: the module to load into (its ``state_dict`` names are the target).
        spec: a .pth/.pt/.safetensors file or ``torchvision://<model>[.<WEIGHTS_TAG>]``.
        expected_missing: keys the model has and the file cannot (e.g. new attention parameters); they are
            logged at INFO level, other missing keys at WARNING.
        expected_unexpected: file keys the model does not need (e.g. ``fc.*``); INFO, others WARNING.

    Returns:
        A :class:`LoadReport` with the loaded, missing, unexpected and skipped keys and the attention modules
        loaded from the file / left identity-initialised, and the task-checkpoint part taken / keys dropped.

    Raises:
        CheckpointError: missing/unreadable/malformed file, no key in common with the model (no
            ``backbone.*`` and no plain backbone keys), a tensor whose shape differs (the first such key in the
            model's order, both shapes and how many more differ) or stages whose block counts differ (another
            depth).
    """
    path = resolve_pretrained(spec)
    where = describe_source(spec, path)
    own = model.state_dict()
    part = take_backbone(read_state_dict(path))
    state_dict, skipped = adapt_timm_resnet_keys(part.state, own)
    _check_fit(model, state_dict, own, where)
    common = [k for k in state_dict if k in own]
    result = model.load_state_dict(state_dict, strict=False)
    attn_loaded, attn_identity = settle_attention(model, common)
    report = LoadReport(str(path), common, list(result.missing_keys), list(result.unexpected_keys), skipped,
                        attn_loaded, attn_identity, part.prefix, part.dropped)
    if part.prefix:
        logger.info('Pretrained %s: a task checkpoint: took its %r part (%d tensors), dropped %d keys outside the '
                    'backbone: %s.', path.name, part.prefix, len(part.state), len(part.dropped),
                    key_groups(part.dropped) or 'none')
    _warn_lost_gamma(model, state_dict, report.unexpected, path.name)
    for reason in dict.fromkeys(skipped.values()):
        keys = [k for k, r in skipped.items() if r == reason]
        logger.warning('Pretrained %s: %d keys not loaded, %s: %s', path.name, len(keys), reason, _short(keys))
    for keys, expected, what in ((report.missing, expected_missing, 'missing from the file (left as initialised)'),
                                 (report.unexpected, expected_unexpected, 'in the file but not in the model')):
        usual = [k for k in keys if expected(k)]
        odd = [k for k in keys if not expected(k)]
        if usual:
            logger.info('Pretrained %s: %d keys %s, as expected: %s', path.name, len(usual), what, _short(usual))
        if odd:
            logger.warning('Pretrained %s: %d keys %s: %s', path.name, len(odd), what, _short(odd))
    if attn_loaded:
        logger.info('Pretrained %s: %d attention modules loaded from the file (pretrained function kept): %s',
                    path.name, len(attn_loaded), _short(attn_loaded))
    if attn_identity:
        logger.info('Pretrained %s: %d attention modules not in the file (kept as initialised, the identity with '
                    'identity_init): %s', path.name, len(attn_identity), _short(attn_identity))
    logger.info('Pretrained %s: loaded %d of %d model tensors.', path.name, len(common), len(own))
    return report


def describe_source(spec: str | os.PathLike, path: Path) -> str:
    """``"Pretrained weights 'torchvision://resnet18' (/root/.cache/...)"``: how messages name the file."""
    text = os.fspath(spec)
    return f"Pretrained weights {text!r}" + ('' if Path(text).expanduser() == path else f' ({path})')


def _check_fit(model: nn.Module, state: Mapping[str, Tensor], own: Mapping[str, Tensor], where: str) -> None:
    """CheckpointError (one line) when ``state`` is another network's than ``model``: shapes that differ (the first
    key, both shapes, how many more), no key in common, or stages with other block counts."""
    mismatch = first_shape_mismatch(state, own)
    if mismatch is not None:
        key, ckpt_shape, model_shape, more = mismatch
        every = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                 if k in own and tuple(v.shape) != tuple(own[k].shape)]
        tail = f'; {more} more tensors differ' if more else '; no other tensor differs'
        hint = _layout_hint(every, _arch_hint(model, state, own))
        raise CheckpointError(f"{where} do not fit the model: shape mismatch for {key!r}: {ckpt_shape} in the file, "
                              f"{model_shape} in the model{tail}.{hint}")
    if not any(k in own for k in state):
        raise CheckpointError(f"{where} share no parameter name with the model: the file has no 'backbone.*' keys "
                              f"(an attnkit task checkpoint's) and none of the backbone's own names (file keys: "
                              f"{key_groups(state, 5)}; the model's: {key_groups(own, 5)}).")
    depth = depth_mismatch(state, own)
    if depth is not None:
        raise CheckpointError(f"{where} do not fit the model: {depth}.{_arch_hint(model, state, own)}")


def _arch_hint(model: nn.Module, state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> str:
    """``' The checkpoint holds ResNet-18 (base_channels=32), the model is ResNet-50 (base_channels=64): ...'``, or
    ``''`` unless both are ResNets (the model's depth read from its ``depth`` attribute when it has one)."""
    depth = getattr(model, 'depth', None)
    theirs, mine = describe_resnet(state), describe_resnet(own, depth if isinstance(depth, int) else None)
    if theirs is None or mine is None or theirs == mine:
        return ''
    return (f' The checkpoint holds {theirs}, the model is {mine}: set the backbone\'s depth, base_channels, '
            'groups and width_per_group as in the run that wrote it.')


def _warn_lost_gamma(model: nn.Module, state: Mapping[str, Tensor], unexpected: list[str], file_name: str) -> None:
    """Warn when the file holds the ``gamma`` of an attention module built without one (``identity_init=False``):
    the module then computes ``f(x)``, not the file's ``x + gamma * (f(x) - x)``."""
    for key in unexpected:
        if not key.endswith('.gamma'):
            continue
        try:
            module = model.get_submodule(key[:-len('.gamma')])
        except AttributeError:
            continue
        if isinstance(module, AttentionModule) and module.gamma is None:
            value = float(state[key].detach().float().reshape(-1)[0])
            logger.warning('Pretrained %s: the file holds %s = %.4g but the model\'s attention module has no gamma '
                           '(built with identity_init=False), so it computes another function than the file\'s; '
                           'leave identity_init unset (True with pretrained=) to keep it.', file_name, key, value)
