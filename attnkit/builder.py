"""Builders for each kind of part, exported from ``attnkit``."""
from __future__ import annotations

from typing import Any, Mapping

from .registry import ATTENTION, BACKBONES, DATASETS, HEADS, METRICS, MODELS, NECKS, POOLING, build

__all__ = ['build_attention', 'build_pooling', 'build_backbone', 'build_neck', 'build_head', 'build_model',
           'build_dataset', 'build_evaluator']

Cfg = Mapping[str, Any]


def build_attention(cfg: Cfg | str | None, channels: int, **kwargs: Any):
    """An attention module for ``channels`` channels from ``dict(type='se', ...)`` or just ``'se'``."""
    if isinstance(cfg, str):
        cfg = {'type': cfg}
    return build(ATTENTION, cfg, channels=channels, **kwargs)


def build_pooling(cfg: Cfg | str | None, channels: int, **kwargs: Any):
    """A downsampler for ``channels`` channels from ``dict(type='lip', ...)`` or just ``'lip'``:
    (N, channels, H, W) -> (N, channels, ceil(H/2), ceil(W/2))."""
    if isinstance(cfg, str):
        cfg = {'type': cfg}
    return build(POOLING, cfg, channels=channels, **kwargs)


def build_backbone(cfg: Cfg, **kwargs: Any):
    """A backbone, e.g. ``dict(type='ResNet', depth=50, attention=dict(type='cbam'))``."""
    return build(BACKBONES, cfg, **kwargs)


def build_neck(cfg: Cfg | None, **kwargs: Any):
    """A neck (``None`` gives ``None``)."""
    return build(NECKS, cfg, **kwargs)


def build_head(cfg: Cfg, **kwargs: Any):
    """A task head."""
    return build(HEADS, cfg, **kwargs)


def build_model(cfg: Cfg, metainfo: dict | None = None):
    """A task model (Detector, Segmentor, VQAModel); ``metainfo`` carries classes / vocabularies."""
    return build(MODELS, cfg, metainfo=metainfo)


def build_dataset(cfg: Cfg, metainfo: dict | None = None):
    """A dataset; ``metainfo`` passes on vocabularies from training data or a checkpoint."""
    return build(DATASETS, cfg, metainfo=metainfo)


def build_evaluator(cfg: Cfg, dataset: Any):
    """An evaluator for ``dataset``."""
    return build(METRICS, cfg, dataset=dataset)
