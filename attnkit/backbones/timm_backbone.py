"""Any timm CNN as a multi-scale backbone, with attention inserted by timm's own module names."""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import BACKBONES, closest_names
from .freezing import FrozenPartsMixin
from .pretrained import LoadReport
from .timm_names import display_names, display_state_keys, reference_model, to_display
from .timm_pretrained import load_timm_attention, load_timm_pretrained

__all__ = ['TimmBackbone']


def _check_model_name(model_name: str) -> None:
    import timm

    if not isinstance(model_name, str) or not timm.is_model(model_name.split('.', 1)[0]):
        close = closest_names(str(model_name), timm.list_models(), n=5)
        hint = f" Closest timm names: {', '.join(close)}." if close else ''
        raise ConfigError(f'TimmBackbone: timm has no model {model_name!r}.{hint} (timm.list_models() lists all.)')


def _stage_ids(reference: nn.Module) -> dict[str, int]:
    """Classification-model parameter name -> stage number: 0 = stem, k = k-th stage (timm's coarse
    ``group_matcher``, the grouping of its layer-wise learning-rate decay); the classifier is not listed."""
    from timm.models import group_parameters

    if not hasattr(reference, 'group_matcher'):
        return {}
    matcher = reference.group_matcher(coarse=True)
    stem = matcher.get('stem') if isinstance(matcher, Mapping) else None
    grouped = group_parameters(reference, matcher, reverse=True)
    stem_params = {n for n in grouped if isinstance(stem, str) and re.match(stem, n)}
    offset = 0 if stem_params else 1  # no stem parameters: the first group is stage 1
    last = max(grouped.values(), default=0)
    head = {n for n, g in grouped.items() if g == last and not any(
        re.match(p if isinstance(p, str) else p[0], n) for p in _patterns(matcher))}
    return {n: g + offset for n, g in grouped.items() if n not in head}


def _patterns(matcher: Any) -> list[Any]:
    if not isinstance(matcher, Mapping):
        return []
    out: list[Any] = []
    for spec in matcher.values():
        if isinstance(spec, (list, tuple)):
            out += list(spec)
        elif spec is not None:
            out.append(spec)
    return out


@BACKBONES.register_module('TimmBackbone')
class TimmBackbone(FrozenPartsMixin, nn.Module):
    """A timm model's ``features_only`` network (``timm.create_model(model_name, features_only=True)``) returning
    the multi-scale maps of ``out_indices``.

    Args:
        model_name: a timm model name (``timm.list_models()``), e.g. ``'convnext_tiny'``, ``'resnet50d'``,
            ``'efficientnet_b0'``, ``'regnety_016'``.
        out_indices: timm feature levels to return (``feature_info``: resnet 0 = stem at stride 2, 1..4 =
            layer1..4; convnext 0..3 = stages 0..3 at strides 4..32).
        pretrained: a local .pth/.pt/.safetensors file (the classification model's state dict as timm publishes
            it, a features model's, or a TimmBackbone's) or ``timm://<model>[.<tag>]`` read from the local Hugging
            Face cache only. Never downloaded.
        attention: ``dict(type='cbam', after=['stages.1', 'stages.2'], **module_kwargs)`` or a list of such dicts,
            placed with :func:`attnkit.attention.insert`; patterns use timm's own (classification model) module
            names (``stages.3``, ``layer2.*``, ``layer2.*.bn2``, ``blocks.5``). Inserted after the pretrained load.
        frozen_stages: -1 trains everything; 0 freezes the stem; k the stem and the first k stages (timm's coarse
            ``group_matcher`` stages: resnet layer1..4, convnext stages.0..3, efficientnet blocks.0..6). Frozen
            parameters get ``requires_grad=False`` (attention attached in frozen stages too) and stay in eval mode.
        norm_eval: keep every batch-norm layer in eval mode while training.
        identity_init: build inserted attention as the exact identity; None = True when ``pretrained`` is given.
        **timm_kwargs: passed to ``timm.create_model`` (``output_stride=8``, ``drop_path_rate=0.1``,
            ``in_chans=1``, tiny test widths such as ``dims=(8, 16, 32, 64), depths=(1, 1, 1, 1)``).

    Attributes:
        model: the timm features model.
        out_channels, strides: channels and stride of each returned map (timm's ``feature_info``).
        pretrained_report: the :class:`~attnkit.backbones.pretrained.LoadReport` of the load, or None.
        places: the :class:`~attnkit.attention.InsertedPlace` of every inserted attention module.

    Shapes: ``forward((N, in_chans, H, W))`` returns one (N, out_channels[i], ~H / strides[i], ~W / strides[i])
    map per ``out_indices`` entry.
    """

    def __init__(self, model_name: str = 'convnext_tiny', out_indices: Sequence[int] = (1, 2, 3),
                 pretrained: str | os.PathLike | None = None,
                 attention: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None, frozen_stages: int = -1,
                 norm_eval: bool = False, identity_init: bool | None = None, **timm_kwargs: Any) -> None:
        super().__init__()
        import timm

        _check_model_name(model_name)
        if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
            raise ConfigError(f"TimmBackbone: pretrained must be a file path or 'timm://<model>' (e.g. "
                              f"'timm://{model_name}'), got {pretrained!r}.")
        if attention is not None and (isinstance(attention, str) or not (
                isinstance(attention, Mapping) or all(isinstance(a, Mapping) for a in attention))):
            raise ConfigError(f"TimmBackbone: attention must be a dict like dict(type='cbam', after=['stages.3']) "
                              f'or a list of such dicts, got {attention!r}.')
        for key in ('features_only', 'pretrained', 'out_indices', 'num_classes'):
            if key in timm_kwargs:
                raise ConfigError(f'TimmBackbone sets timm.create_model({key}=...) itself; remove {key!r} from the '
                                  'backbone config.')
        try:
            reference = reference_model(model_name, **timm_kwargs)
        except (TypeError, AssertionError, ValueError) as exc:
            raise ConfigError(f'TimmBackbone: timm model {model_name!r} does not take these arguments '
                              f'{sorted(timm_kwargs)}: {type(exc).__name__}: {exc}') from None
        out_indices = (int(out_indices),) if isinstance(out_indices, int) else tuple(int(i) for i in out_indices)
        num_levels = len(getattr(reference, 'feature_info', ()))
        if not num_levels:
            raise ConfigError(f'TimmBackbone: timm model {model_name!r} has no feature_info (no multi-scale '
                              'features to return).')
        if not out_indices or any(i not in range(num_levels) for i in out_indices) \
                or list(out_indices) != sorted(set(out_indices)):
            raise ConfigError(f'TimmBackbone: out_indices of timm {model_name!r} must be increasing, distinct values '
                              f'in 0..{num_levels - 1} (its {num_levels} feature levels), got {out_indices!r}.')
        self.model_name = model_name
        self.out_indices = out_indices
        self.norm_eval = norm_eval
        self.model = timm.create_model(model_name, features_only=True, out_indices=out_indices, pretrained=False,
                                       **timm_kwargs)
        info = self.model.feature_info
        self.out_channels: tuple[int, ...] = tuple(int(c) for c in info.channels())
        self.strides: tuple[int, ...] = tuple(int(r) for r in info.reduction())
        self.in_chans = int(timm_kwargs.get('in_chans', 3))

        names = display_names(self.model, reference)  # display -> path inside self.model
        self._real_to_display = {real: display for display, real in names.items()}
        self.pretrained_report: LoadReport | None = None
        if pretrained is not None:
            self.pretrained_report = load_timm_pretrained(
                self.model, pretrained, display_keys=display_state_keys(self.model, names),
                reference_keys=set(reference.state_dict()), model_name=model_name)

        self.places: list[Any] = []
        if attention is not None:
            from ..attention import insert

            if identity_init is None:
                identity_init = pretrained is not None
            example = torch.zeros(1, self.in_chans, max(64, 2 * max(self.strides)), max(64, 2 * max(self.strides)))
            self.places = insert(self, attention, identity_init=identity_init, example_input=example,
                                 names={display: f'model.{real}' for display, real in names.items() if display})
            if self.pretrained_report is not None:  # a checkpoint of a model over this backbone: its attention
                load_timm_attention(self, pretrained, self.pretrained_report)

        stage_of = _stage_ids(reference)
        self.num_stages = max(stage_of.values(), default=0)
        if frozen_stages not in range(-1, self.num_stages + 1):
            raise ConfigError(f'TimmBackbone: frozen_stages of timm {model_name!r} must be in -1..{self.num_stages} '
                              f'(stem + {self.num_stages} stages), got {frozen_stages!r}.')
        self.frozen_stages = frozen_stages
        self._frozen_names: list[str] = []  # names, not modules: a SyncBN conversion replaces modules
        if frozen_stages >= 0:
            self._freeze(stage_of, frozen_stages)

    def _freeze(self, stage_of: Mapping[str, int], frozen_stages: int) -> None:
        """``requires_grad=False`` on the stem and stages 1..k (and attention attached to modules there)."""
        from ..attention import attachments

        frozen_ids = set()
        for name, param in self.model.named_parameters():
            display = to_display(name, self._real_to_display)
            if display is not None and stage_of.get(display, frozen_stages + 1) <= frozen_stages:
                frozen_ids.add(id(param))
        for att in attachments(self):
            target = self.get_submodule(att.target_name)
            params = list(target.parameters())
            if params and all(id(p) in frozen_ids for p in params):
                frozen_ids.update(id(p) for p in att.attention.parameters())
        for param in self.parameters():
            if id(param) in frozen_ids:
                param.requires_grad_(False)
        # the largest modules whose parameters are all frozen stay in eval mode
        covered: list[str] = []
        for name, module in self.named_modules():
            if any(name.startswith(c + '.') for c in covered):
                continue
            params = list(module.parameters())
            if params and all(id(p) in frozen_ids for p in params):
                covered.append(name)
        self._frozen_names = covered
        for name in covered:
            self.get_submodule(name).eval()

    def _frozen_modules(self) -> list[nn.Module]:
        """The largest modules whose parameters are all frozen (by name: a SyncBN conversion replaces modules)."""
        return [self.get_submodule(name) for name in self._frozen_names]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(N, in_chans, H, W) -> one (N, out_channels[i], H/strides[i], W/strides[i]) map per out index."""
        return tuple(self.model(x))
