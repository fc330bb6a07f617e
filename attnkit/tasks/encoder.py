"""The wiring contract of every task model: backbone (+ optional neck) -> features with declared channels/strides.

* :class:`FeatureSpec` — what a tuple of feature maps is: ``channels`` and ``strides`` (pixels per cell) per map.
* :func:`build_neck_on` — **the one place** that decides how a neck gets its inputs: ``in_channels`` (the input
  features' channels) unless the config sets it, and ``in_strides`` (their strides) when they are known, the config
  does not set them and the neck takes them (an ``in_strides`` argument or ``**kwargs``).
* :class:`Encoder` — an ``nn.Module`` with children ``backbone`` and ``neck`` (state-dict keys ``backbone.*``,
  ``neck.*``). The task models (Detector, Segmentor, VQAModel, ImageClassifier) *are* Encoders with heads, so
  their keys stay ``backbone.*`` / ``neck.*`` / ``head.*``. ``in_indices`` picks which backbone outputs go on
  (to the neck, or out); an Encoder without a backbone (``backbone=None, feature_spec=...``) runs on features
  given to it — a branch of a :class:`~attnkit.tasks.multitask.MultiTaskModel` over the shared backbone.

Shapes: ``images`` (N, 3, H, W) float -> backbone features, a tuple of (N, C_i, H / s_i, W / s_i) ->
``in_indices`` selection -> neck -> ``len(out_channels)`` maps (N, out_channels[j], H / strides[j], ...).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..builder import build_backbone, build_neck
from ..errors import ConfigError
from ..registry import NECKS, get_registered

__all__ = ['FeatureSpec', 'build_neck_on', 'Encoder']


@dataclass(frozen=True)
class FeatureSpec:
    """Channels and strides of a tuple of feature maps (``strides`` is None when unknown)."""

    channels: tuple[int, ...]
    strides: tuple[int, ...] | None = None

    @classmethod
    def of(cls, module: nn.Module) -> 'FeatureSpec':
        """The spec a backbone or neck declares through its ``out_channels`` and (optional) ``strides``."""
        out = getattr(module, 'out_channels', None)
        if out is None:
            raise ConfigError(f'{type(module).__name__} declares no out_channels: a backbone or neck used by a task '
                              'model must say the channels of each output.')
        channels = (int(out),) if isinstance(out, int) else tuple(int(c) for c in out)
        strides = getattr(module, 'strides', None)
        strides = None if strides is None else tuple(int(s) for s in strides)
        if strides is not None and len(strides) != len(channels):
            strides = None
        return cls(channels, strides)

    def select(self, indices: Sequence[int] | None) -> 'FeatureSpec':
        """The spec of the maps ``indices`` (positions in this tuple; negative counts from the end)."""
        if indices is None:
            return self
        n = len(self.channels)
        bad = [i for i in indices if not -n <= int(i) < n]
        if bad or not indices:
            raise ConfigError(f'in_indices {tuple(indices)!r}: the backbone gives {n} feature maps (channels '
                              f'{self.channels}); pick positions 0..{n - 1}.')
        return FeatureSpec(tuple(self.channels[i] for i in indices),
                           None if self.strides is None else tuple(self.strides[i] for i in indices))

    def as_dict(self) -> dict[str, Any]:
        return {'channels': list(self.channels), 'strides': None if self.strides is None else list(self.strides)}


def _accepts(obj: Any, arg: str) -> bool:
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_neck_on(cfg: Mapping[str, Any] | None, spec: FeatureSpec) -> tuple[nn.Module | None, FeatureSpec]:
    """Build the neck ``cfg`` over features described by ``spec``; ``(None, spec)`` without a neck.

    The neck gets ``in_channels=list(spec.channels)`` unless ``cfg`` sets it, and ``in_strides=list(spec.strides)``
    when the strides are known, ``cfg`` does not set them and the neck class takes ``in_strides``.

    Returns:
        ``(neck, out_spec)``: ``out_spec.channels`` from the neck's ``out_channels`` (an int means that width
        for each input map) and ``out_spec.strides`` from its ``strides`` (None when it does not declare them).
    """
    if cfg is None:
        return None, spec
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise ConfigError(f"A neck config must be a dict with a 'type' key, got {cfg!r}.")
    cfg = dict(cfg)
    neck_type = cfg['type']
    neck_cls = get_registered(NECKS, neck_type) if isinstance(neck_type, str) else neck_type
    cfg.setdefault('in_channels', list(spec.channels))
    if spec.strides is not None and 'in_strides' not in cfg and _accepts(neck_cls, 'in_strides'):
        cfg['in_strides'] = list(spec.strides)
    neck = build_neck(cfg)
    out = getattr(neck, 'out_channels', None)
    if out is None:
        raise ConfigError(f'Neck {neck_type!r} declares no out_channels.')
    channels = (int(out),) * len(spec.channels) if isinstance(out, int) else tuple(int(c) for c in out)
    strides = getattr(neck, 'strides', None)
    strides = None if strides is None or len(strides) != len(channels) else tuple(int(s) for s in strides)
    return neck, FeatureSpec(channels, strides)


class Encoder(nn.Module):
    """Backbone (+ optional neck) built from config, with declared ``out_channels`` and ``strides`` per output.

    Args:
        backbone: backbone config; ``None`` for an encoder that runs on given backbone features (then
            ``feature_spec`` describes them).
        neck: optional neck config, built by :func:`build_neck_on` over the selected backbone features.
        in_indices: positions of the backbone outputs to use (default all), e.g. ``(1, 2, 3)`` of a shared
            backbone with ``out_indices=(0, 1, 2, 3)``.
        feature_spec: ``FeatureSpec`` or ``dict(channels=..., strides=...)`` of the backbone outputs when
            ``backbone`` is None.

    Attributes:
        backbone_spec: the selected backbone features (the neck's input); ``backbone_channels``/``backbone_strides``.
        out_spec: the encoder's outputs; ``out_channels``/``strides``.

    Subclasses (the task models) call ``super().__init__()`` and then :meth:`init_encoder` where their parts are
    built, so that the order of parameters (and of random initialisation) is theirs.
    """

    def __init__(self, backbone: Mapping[str, Any] | None = None, neck: Mapping[str, Any] | None = None,
                 in_indices: Sequence[int] | None = None,
                 feature_spec: FeatureSpec | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone: nn.Module | None = None
        self.neck: nn.Module | None = None
        self.in_indices: tuple[int, ...] | None = None
        self.feature_spec: FeatureSpec | None = None
        self.backbone_spec: FeatureSpec | None = None
        self.out_spec: FeatureSpec | None = None
        if backbone is not None or feature_spec is not None:
            self.init_encoder(backbone, neck, in_indices, feature_spec)
        elif neck is not None:
            raise ConfigError('Encoder: a neck needs a backbone config or the feature_spec of given features.')

    def init_encoder(self, backbone: Mapping[str, Any] | None, neck: Mapping[str, Any] | None = None,
                     in_indices: Sequence[int] | None = None,
                     feature_spec: FeatureSpec | Mapping[str, Any] | None = None) -> None:
        """Build ``self.backbone`` (unless None) and ``self.neck`` and set the specs (see the class docstring)."""
        if backbone is not None:
            if feature_spec is not None:
                raise ConfigError('Encoder: give a backbone config or the feature_spec of given features, not both.')
            self.backbone = build_backbone(backbone)
            full = FeatureSpec.of(self.backbone)
        elif feature_spec is not None:
            full = feature_spec if isinstance(feature_spec, FeatureSpec) else FeatureSpec(
                tuple(int(c) for c in feature_spec['channels']),
                None if feature_spec.get('strides') is None else tuple(int(s) for s in feature_spec['strides']))
        else:
            raise ConfigError('Encoder: needs a backbone config (or, for a branch on a shared backbone, the '
                              'feature_spec of its features).')
        self.feature_spec = full
        self.in_indices = None if in_indices is None else tuple(int(i) for i in in_indices)
        self.backbone_spec = full.select(self.in_indices)
        self.neck, self.out_spec = build_neck_on(neck, self.backbone_spec)

    # -- declared shapes ---------------------------------------------------------------------------
    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each output map (the neck's, or the selected backbone maps without a neck)."""
        return self.out_spec.channels

    @property
    def strides(self) -> tuple[int, ...] | None:
        """Stride of each output map, None when the parts do not declare them."""
        return self.out_spec.strides

    @property
    def backbone_channels(self) -> tuple[int, ...]:
        return self.backbone_spec.channels

    @property
    def backbone_strides(self) -> tuple[int, ...] | None:
        return self.backbone_spec.strides

    # -- running ------------------------------------------------------------------------------------
    def run_backbone(self, images: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) normalised images -> ALL backbone outputs (before ``in_indices``).

        The input follows the backbone's memory format (channels_last when the model was converted).
        """
        if self.backbone is None:
            raise ConfigError(f'{type(self).__name__} has no backbone of its own (a multi-task branch): pass the '
                              'shared backbone features (feats=...).')
        w = next(self.backbone.parameters(), None)
        if w is not None and w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) \
                and not w.is_contiguous():
            images = images.contiguous(memory_format=torch.channels_last)
        return tuple(self.backbone(images))

    def select(self, feats: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """All backbone outputs -> the ``in_indices`` ones."""
        feats = tuple(feats)
        if self.feature_spec is not None and len(feats) != len(self.feature_spec.channels):
            raise ConfigError(f'{type(self).__name__}: got {len(feats)} backbone feature maps, expected '
                              f'{len(self.feature_spec.channels)} (channels {self.feature_spec.channels}).')
        return feats if self.in_indices is None else tuple(feats[i] for i in self.in_indices)

    def backbone_features(self, images: Tensor | None = None,
                          feats: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """The selected backbone maps, from ``images`` or from given (all) backbone outputs ``feats``."""
        return self.select(self.run_backbone(images) if feats is None else feats)

    def forward_neck(self, feats: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Selected backbone maps -> encoder outputs (identity without a neck)."""
        return tuple(self.neck(feats)) if self.neck is not None else tuple(feats)

    def encode(self, images: Tensor | None = None, feats: Sequence[Tensor] | None = None) -> tuple[Tensor, ...]:
        """``images`` (N, 3, H, W) normalised, or all backbone outputs ``feats`` -> the output maps."""
        return self.forward_neck(self.backbone_features(images, feats))

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:  # task models override forward(batch)
        return self.encode(images)
