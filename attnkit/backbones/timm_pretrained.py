"""Pretrained weights for :class:`~attnkit.backbones.timm_backbone.TimmBackbone`, from a file or the local
Hugging Face cache (``timm://<model>[.<tag>]``). Nothing here downloads.

A checkpoint may use the classification model's names (``stages.0.blocks.0.conv_dw.weight``, what timm publishes
and ``timm.create_model(name).state_dict()`` gives), the features model's (``stages_0.blocks...``) or a
TimmBackbone's (``model.stages_0...``); the classifier and the stages after the last output are expected to be
unused.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from torch import Tensor, nn

from ..errors import CheckpointError
from .pretrained import LoadReport, read_state_dict, resolve_pretrained, strip_prefixes

__all__ = ['TIMM_PREFIX', 'hf_cache_dir', 'timm_cache_file', 'resolve_timm_pretrained', 'load_timm_pretrained']

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
    state_dict = strip_prefixes(read_state_dict(path), ('module.', 'backbone.'))
    own = features.state_dict()
    renamed, unknown = _to_model_keys(state_dict, own, display_keys)
    where = f"Pretrained weights {os.fspath(spec)!r} ({path})"
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
    odd = [k for k in unknown if k not in expected_unused]
    report = LoadReport(str(path), sorted(renamed), [k for k in own if k not in renamed], unknown)
    if expected_unused:
        logger.info('Pretrained %s: %d tensors of the classifier / unused stages not loaded, as expected: %s',
                    path.name, len(expected_unused), _short(expected_unused))
    if odd:
        logger.warning('Pretrained %s: %d keys in the file but not in timm %r: %s', path.name, len(odd), model_name,
                       _short(odd))
    logger.info('Pretrained %s: loaded %d of %d tensors of timm %r.', path.name, len(renamed), len(own), model_name)
    return report
