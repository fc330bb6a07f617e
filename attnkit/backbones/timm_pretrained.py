"""Pretrained weights for :class:`~attnkit.backbones.timm_backbone.TimmBackbone`, from a file or the local
Hugging Face cache (``timm://<model>[.<tag>]``). Nothing here downloads.

A checkpoint may use the classification model's names (``stages.0.blocks.0.conv_dw.weight``, what timm publishes
and ``timm.create_model(name).state_dict()`` gives), the features model's (``stages_0.blocks...``) or a
TimmBackbone's (``model.stages_0...``); the classifier and the stages after the last output are expected to be
unused. An attnkit task checkpoint (an ``ImageClassifier`` or detector over a TimmBackbone) gives its
``backbone.*`` part, the rest reported as dropped; its inserted attention is loaded after the insertion
(:func:`load_timm_attention`), gamma included.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

from torch import Tensor, nn

from ..errors import CheckpointError
from .pretrained import (LoadReport, describe_source, key_groups, read_state_dict, resolve_pretrained,
                         settle_attention, take_backbone)

__all__ = ['TIMM_PREFIX', 'hf_cache_dir', 'timm_cache_file', 'resolve_timm_pretrained', 'load_timm_pretrained',
           'load_timm_attention']

logger = logging.getLogger('attnkit.backbones')

TIMM_PREFIX = 'timm://'
_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else huggingface_hub's default)."""
    env = os.environ.get('HF_HUB_CACHE') or os.environ.get('HUGGINGFACE_HUB_CACHE')
    if env:
        return Path(env).expanduser()
    if os.environ.get('HF_HOME'):
        return Path(os.environ['HF_HOME']).expanduser() / 'hub'
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def timm_cache_file(name: str) -> Path:
    """The cached weights file of ``timm://name`` (``name`` = ``convnext_tiny`` or ``convnext_tiny.fb_in1k``).

    Raises:
        CheckpointError: timm has no Hugging Face weights of that name, or the file is not in the cache (saying
            which file to put where).
    """
    import timm
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    from ..registry import closest_names

    arch = name.split('.', 1)[0]
    try:
        cfg = get_pretrained_cfg(name) if timm.is_model(arch) else None
    except RuntimeError:  # a tag the architecture does not have
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        tags = timm.list_pretrained(f'{arch}*') if timm.is_model(arch) else []
        close = tags or closest_names(name, timm.list_pretrained(), n=5)
        hint = f" Known pretrained names: {', '.join(close[:8])}." if close else ''
        raise CheckpointError(f"'{TIMM_PREFIX}{name}': timm has no Hugging Face weights named {name!r}.{hint}")
    repo, _, revision = cfg.hf_hub_id.partition('@')
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _WEIGHT_FILES
    cache = hf_cache_dir()
    for file_name in files:
        found = try_to_load_from_cache(repo, file_name, cache_dir=str(cache), revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    folder = cache / f"models--{repo.replace('/', '--')}"
    raise CheckpointError(
        f"Pretrained weights '{TIMM_PREFIX}{name}' are not in the Hugging Face cache: put {files[0]} (from "
        f"https://huggingface.co/{repo}/resolve/{revision or 'main'}/{files[0]}) at "
        f"{folder / 'snapshots' / 'main' / files[0]} and write the line 'main' into {folder / 'refs' / 'main'}, "
        f"or run `hf download {repo} {files[0]}` with HF_HUB_CACHE={cache} where there is network, or pass the "
        "file's path as pretrained=. attnkit never downloads weights.")


def resolve_timm_pretrained(spec: str | os.PathLike) -> Path:
    """The local file behind ``spec``: a .pth/.pt/.safetensors path or ``timm://<model>[.<tag>]``."""
    text = os.fspath(spec)
    if text.startswith(TIMM_PREFIX):
        return timm_cache_file(text[len(TIMM_PREFIX):])
    return resolve_pretrained(text)


def _short(keys: list[str], limit: int = 8) -> str:
    return ', '.join(keys[:limit]) + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def _to_model_keys(state_dict: Mapping[str, Tensor], own: Mapping[str, Tensor], display_keys: Mapping[str, str]
                   ) -> tuple[dict[str, Tensor], list[str]]:
    """(file tensors renamed to the features model's keys, file keys that name nothing in it)."""
    renamed: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        bare = key[len('model.'):] if key.startswith('model.') and key not in own else key
        target = bare if bare in own else display_keys.get(key, display_keys.get(bare))
        if target is None:
            unknown.append(key)
        else:
            renamed[target] = value
    return renamed, unknown


def load_timm_pretrained(features: nn.Module, spec: str | os.PathLike, *, display_keys: Mapping[str, str],
                         reference_keys: set[str], model_name: str) -> LoadReport:
    """Load ``spec`` into the timm features model ``features`` and report what did not match.

    Args:
        features: the ``features_only`` model (its state-dict names are the target).
        spec: a local file or ``timm://<model>[.<tag>]``.
        display_keys: classification-model state-dict key -> features-model key
            (:func:`~attnkit.backbones.timm_names.display_state_keys`).
        reference_keys: every state-dict key of the classification model; file keys among them that the features
            model lacks (classifier, unused stages) are expected to be unused.
        model_name: for messages.

    Returns:
        A :class:`~attnkit.backbones.pretrained.LoadReport`: ``loaded``/``missing`` in features-model keys,
        ``unexpected`` in file keys.

    Raises:
        CheckpointError: unreadable or missing file, a tensor whose shape differs (the first such key and both
            shapes), no key in common, or model tensors the file lacks (a checkpoint of another architecture).
    """
    path = resolve_timm_pretrained(spec)
    where = describe_source(spec, path)
    part = take_backbone(read_state_dict(path))
    state_dict = part.state
    own = features.state_dict()
    renamed, unknown = _to_model_keys(state_dict, own, display_keys)
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{where} do not fit timm {model_name!r}: {key!r} has shape {tuple(value.shape)} in "
                                  f"the file and {tuple(own[key].shape)} in the model (a checkpoint of another "
                                  "architecture or width?).")
    if not renamed:
        raise CheckpointError(f"{where} share no tensor name with timm {model_name!r}: the file's keys start "
                              f"{_short(sorted(state_dict), 4)}; the model's start {_short(list(own), 4)}.")
    lacking = [k for k in own if k not in renamed and not k.endswith('num_batches_tracked')]
    if lacking:
        raise CheckpointError(f"{where} lack {len(lacking)} of timm {model_name!r}'s {len(own)} tensors, first "
                              f"{lacking[0]!r} (a checkpoint of another architecture or depth?).")
    features.load_state_dict(renamed, strict=False)
    expected_unused = [k for k in unknown if k in reference_keys or k.removeprefix('model.') in reference_keys]
    attention = [k for k in unknown if k not in expected_unused and _ATTENTION_KEY.search(k)]
    odd = [k for k in unknown if k not in expected_unused and k not in attention]
    report = LoadReport(str(path), sorted(renamed), [k for k in own if k not in renamed], unknown,
                        prefix=part.prefix, dropped=part.dropped)
    if part.prefix:
        logger.info('Pretrained %s: a task checkpoint: took its %r part (%d tensors), dropped %d keys outside the '
                    'backbone: %s.', path.name, part.prefix, len(state_dict), len(part.dropped),
                    key_groups(part.dropped))
    if attention:
        logger.info('Pretrained %s: %d tensors of inserted attention, loaded once it is inserted: %s', path.name,
                    len(attention), _short(attention))
    if expected_unused:
        logger.info('Pretrained %s: %d tensors of the classifier / unused stages not loaded, as expected: %s',
                    path.name, len(expected_unused), _short(expected_unused))
    if odd:
        logger.warning('Pretrained %s: %d keys in the file but not in timm %r: %s', path.name, len(odd), model_name,
                       _short(odd))
    logger.info('Pretrained %s: loaded %d of %d tensors of timm %r.', path.name, len(renamed), len(own), model_name)
    return report


# keys of modules placed by attnkit.attention.insert under its default names (``attn``, ``<path>_attn``, ``..._2``)
_ATTENTION_KEY = re.compile(r'(^|\.)(\w*_)?attn(_\d+)?\.')


def load_timm_attention(backbone: nn.Module, spec: str | os.PathLike, report: LoadReport) -> LoadReport:
    """Load the inserted-attention tensors of ``spec`` into ``backbone`` once its attention is inserted.

    :func:`load_timm_pretrained` runs before the insertion, so a checkpoint of an attnkit model over the same
    TimmBackbone (with the same ``attention=``) leaves the attention tensors unused; this loads every file tensor
    whose name is now a key of ``backbone`` and settles the attention modules (:func:`settle_attention`:
    ``gamma`` from the file, or 1 when the file lacks it). ``report`` is updated in place.

    Args:
        backbone: the TimmBackbone after :func:`~attnkit.attention.insert` (its state-dict names, ``model.*``).
        spec: the same file as given to :func:`load_timm_pretrained`.
        report: its report.

    Returns:
        ``report``, with the attention tensors moved from ``unexpected`` to ``loaded`` and the attention modules
        listed in ``attention_loaded`` / ``attention_identity``.

    Raises:
        CheckpointError: an attention tensor whose shape differs from the inserted module's (another attention
            type, reduction or place).
    """
    own = backbone.state_dict()
    pending = set(report.unexpected)
    if not any(k in own or f'model.{k}' in own for k in pending):
        report.attention_loaded, report.attention_identity = settle_attention(backbone, [])
        return report
    path = resolve_timm_pretrained(spec)
    state = take_backbone(read_state_dict(path)).state
    found: dict[str, str] = {}  # file key -> backbone key
    for key in pending:
        target = key if key in own else f'model.{key}'
        if target in own and key in state:
            found[key] = target
    for key, target in found.items():
        if tuple(state[key].shape) != tuple(own[target].shape):
            raise CheckpointError(f"{describe_source(spec, path)} do not fit the inserted attention: {target!r}: "
                                  f"checkpoint {tuple(state[key].shape)} vs model {tuple(own[target].shape)} (build "
                                  "the attention= of the run that wrote it).")
    backbone.load_state_dict({target: state[key] for key, target in found.items()}, strict=False)
    report.attention_loaded, report.attention_identity = settle_attention(backbone, found.values())
    report.loaded += sorted(found.values())
    report.unexpected = [k for k in report.unexpected if k not in found]
    if report.attention_loaded:
        logger.info('Pretrained %s: %d attention modules loaded from the file (pretrained function kept): %s',
                    path.name, len(report.attention_loaded), _short(report.attention_loaded))
    return report
