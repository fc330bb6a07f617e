"""Building a ``transformers`` vision backbone from a local directory (or from a config) for :class:`HFBackbone`.

Nothing here downloads: ``model_path`` must be a local directory holding ``config.json`` (and the weights,
``model.safetensors`` / ``pytorch_model.bin``), e.g. made once with
``huggingface-cli download facebook/dinov2-small --local-dir checkpoints/dinov2-small``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

from torch import nn

from ..errors import CheckpointError, ConfigError
from ..registry import closest_names
from .pretrained import LoadReport

__all__ = ['backbone_model_types', 'resolve_out_indices', 'load_hf_backbone']

logger = logging.getLogger('attnkit.backbones')


def backbone_model_types() -> list[str]:
    """The ``model_type`` values for which the installed ``transformers.AutoBackbone`` has a backbone class."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES
    return sorted(MODEL_FOR_BACKBONE_MAPPING_NAMES)


def _check_model_type(model_type: Any, where: str) -> str:
    supported = backbone_model_types()
    if model_type in supported:
        return str(model_type)
    close = closest_names(str(model_type), supported)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
    raise ConfigError(f"HFBackbone: {where} has model_type {model_type!r}, and transformers.AutoBackbone has no "
                      f"backbone for it (it is not a vision backbone model).{hint} Supported model types: "
                      f"{', '.join(supported)}.")


def _read_model_type(model_path: str) -> str:
    """``model_type`` of ``model_path/config.json``, with a one-line error for a missing dir/file."""
    if not os.path.exists(model_path):
        raise CheckpointError(f"HFBackbone: model_path {model_path!r} does not exist; download the model there first, "
                              f"e.g. `huggingface-cli download facebook/dinov2-small --local-dir {model_path}` "
                              '(nothing is downloaded at run time).')
    if not os.path.isdir(model_path):
        raise CheckpointError(f"HFBackbone: model_path {model_path!r} is a file; it must be a directory holding "
                              'config.json and the weights (as written by save_pretrained / huggingface-cli download).')
    config_file = os.path.join(model_path, 'config.json')
    if not os.path.isfile(config_file):
        found = sorted(os.listdir(model_path))
        shown = ', '.join(found[:8]) + (', ...' if len(found) > 8 else '') if found else 'nothing'
        raise CheckpointError(f"HFBackbone: {model_path!r} has no config.json (found: {shown}); it must be a "
                              'transformers model directory (save_pretrained / huggingface-cli download).')
    try:
        with open(config_file, encoding='utf-8') as f:
            model_type = json.load(f).get('model_type')
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"HFBackbone: cannot read {config_file!r} as a JSON object: {exc}.") from exc
    if model_type is None:
        raise ConfigError(f"HFBackbone: {config_file!r} has no 'model_type'; transformers.AutoBackbone needs one of "
                          f"{', '.join(backbone_model_types())}.")
    return _check_model_type(model_type, config_file)


def resolve_out_indices(out_indices: int | Sequence[int], num_stages: int, model_type: str) -> tuple[int, ...]:
    """attnkit stage indices (0 = first stage after the stem, negatives count from the last) -> 0-based, sorted.

    Raises:
        ConfigError: an index outside ``-num_stages..num_stages - 1``, duplicates or an empty selection.
    """
    given = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
    valid = range(-num_stages, num_stages)
    bad = [i for i in given if not isinstance(i, int) or i not in valid]
    if not given or bad:
        raise ConfigError(f"HFBackbone out_indices {given!r}: {model_type} has {num_stages} stages (stage1.."
                          f"stage{num_stages}); use 0..{num_stages - 1} or -{num_stages}..-1 (-1 = the last stage).")
    resolved = tuple(i % num_stages for i in given)
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"HFBackbone out_indices {given!r} name the same stage twice.")
    return tuple(sorted(resolved))


def _build_config(model_path: str | None, config: Mapping[str, Any] | None) -> tuple[Any, str]:
    """The transformers config (``PretrainedConfig``) and a short description of where it came from."""
    from transformers import AutoConfig
    overrides = dict(config or {})
    if model_path is not None:
        model_type = _read_model_type(model_path)
        wanted = overrides.pop('model_type', model_type)
        if wanted != model_type:
            raise ConfigError(f"HFBackbone: config model_type {wanted!r} differs from {model_path!r}'s "
                              f"{model_type!r}; with model_path, config only overrides fields.")
        return AutoConfig.from_pretrained(model_path, **overrides), model_path
    if 'model_type' not in overrides:
        raise ConfigError("HFBackbone needs model_path='<local dir>' or config=dict(model_type=..., ...); "
                          f"model types: {', '.join(backbone_model_types())}.")
    model_type = _check_model_type(overrides.pop('model_type'), 'config')
    return AutoConfig.for_model(model_type, **overrides), f'config(model_type={model_type!r})'


def load_hf_backbone(model_path: str | None, config: Mapping[str, Any] | None, out_indices: int | Sequence[int]
                     ) -> tuple[nn.Module, tuple[int, ...], LoadReport | None]:
    """Build ``transformers.AutoBackbone`` from ``model_path`` (weights) or ``config`` (random init).

    Args:
        model_path: local model directory (``config.json`` + weights) or None.
        config: with ``model_path``: overrides of its config fields; without: ``dict(model_type=..., **fields)``.
        out_indices: attnkit stage indices (0 = stage1, -1 = last stage).

    Returns:
        ``(hf_backbone in float32, 0-based stage indices, LoadReport or None)``.
    """
    from transformers import AutoBackbone
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING
    hf_config, source = _build_config(model_path, config)
    stage_names = list(getattr(hf_config, 'stage_names', None) or [])
    if len(stage_names) < 2:
        raise ConfigError(f"HFBackbone: the {hf_config.model_type} config from {source} names no stages "
                          '(stage_names); it is not a backbone config.')
    num_stages = len(stage_names) - 1  # stage_names[0] is the stem
    indices = resolve_out_indices(out_indices, num_stages, hf_config.model_type)
    hf_config.out_indices = [i + 1 for i in indices]
    if hasattr(hf_config, 'reshape_hidden_states'):
        hf_config.reshape_hidden_states = True  # ViTs: (N, C, h, w) maps without CLS/register tokens
    report = None
    if model_path is None:
        model = AutoBackbone.from_config(hf_config)
    else:
        # AutoBackbone's own class for the config: AutoBackbone.from_pretrained itself is not used, because in
        # transformers 5.x it first asks the Hub whether the name is a repository (a network call, and an error for
        # absolute local paths).
        backbone_cls = MODEL_FOR_BACKBONE_MAPPING[type(hf_config)]
        try:
            model, info = backbone_cls.from_pretrained(model_path, config=hf_config, output_loading_info=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"HFBackbone: cannot load the {hf_config.model_type} weights from {model_path!r} "
                                  f"({first}).") from exc
        missing = sorted(info.get('missing_keys', []))
        unexpected = sorted(info.get('unexpected_keys', []))
        missing_set = set(missing)
        loaded = [k for k in model.state_dict() if k not in missing_set]
        if not loaded or len(missing) > len(loaded):
            raise CheckpointError(f"HFBackbone: {model_path!r} matched only {len(loaded)} of the "
                                  f"{len(loaded) + len(missing)} {type(model).__name__} tensors (missing e.g. "
                                  f"{', '.join(missing[:4])}); is it a {hf_config.model_type} checkpoint?")
        report = LoadReport(file=model_path, loaded=loaded, missing=missing, unexpected=unexpected)
        if missing:
            logger.info('HFBackbone %s: %d tensors start from their initialisation: %s', model_path, len(missing),
                        ', '.join(missing[:8]))
    return model.float(), indices, report
