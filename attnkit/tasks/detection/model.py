"""``Detector``: backbone (with any attention) → FPN → dense detection head (FCOS or RetinaNet)."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

from torch import Tensor

from ...builder import build_head
from ...data.normalize import build_normalizer, image_sizes
from ...errors import ConfigError
from ...registry import MODELS
from ..encoder import Encoder, FeatureSpec

__all__ = ['Detector']


@MODELS.register_module('Detector')
class Detector(Encoder):
    """A one-stage detector.

    Args:
        backbone: backbone config (``dict(type='ResNet', depth=50, attention=...)``).
        neck: neck config (``dict(type='FPN', ...)``); ``in_channels`` defaults to the backbone's
            ``out_channels`` and ``in_strides`` to its ``strides``.
        head: head config (``dict(type='FCOSHead', ...)``); ``num_classes`` comes from ``metainfo['classes']``
            and ``in_channels`` from the neck.
        metainfo: ``{'classes': [names]}`` from the training set or the checkpoint.
        init_from: a trained attnkit detector checkpoint (``.pth`` or ``model.safetensors``) to fine-tune from:
            every tensor whose name and shape match is loaded; the rest (e.g. the classifier when the classes
            differ) keep their initialisation. ``self.init_report`` says what was loaded and skipped.
        normalize: ``dict(mean=(r, g, b), std=(r, g, b))`` on a 0..255 scale (default ImageNet's): the model
            normalises the batch's uint8 ``images`` on its device (:mod:`attnkit.data.normalize`).
        in_indices, feature_spec: see :class:`~attnkit.tasks.encoder.Encoder` (which backbone outputs feed the
            neck; ``backbone=None`` + ``feature_spec`` for a branch on a shared backbone).

    The backbone and neck are wired by the :class:`~attnkit.tasks.encoder.Encoder` contract (the neck gets the
    backbone's channels and strides); the head's ``in_channels`` is the first neck output's width (the last
    backbone map's without a neck).

    ``forward(batch)``: in training mode ``{'loss', 'loss_cls', 'loss_bbox', ...}``; in eval mode one dict per
    image with ``boxes`` (K, 4) xyxy in original-image pixels, ``scores`` (K,), ``labels`` (K,).
    """

    def __init__(self, backbone: dict | None, neck: dict | None, head: dict, metainfo: dict | None = None,
                 init_from: str | None = None, normalize: dict | None = None,
                 in_indices: Sequence[int] | None = None, feature_spec: FeatureSpec | dict | None = None) -> None:
        super().__init__()
        self.normalizer = build_normalizer(normalize)
        self.metainfo = dict(metainfo or {})
        classes = self.metainfo.get('classes')
        head = dict(head)
        if classes:
            self.metainfo['classes'] = [str(c) for c in classes]
            if head.get('num_classes') not in (None, len(classes)):
                raise ConfigError(f"Detector: head.num_classes={head['num_classes']} but the dataset has "
                                  f"{len(classes)} classes.")
            head['num_classes'] = len(classes)
        elif head.get('num_classes') is None:
            raise ConfigError("Detector: no classes: pass metainfo={'classes': [...]} or head.num_classes.")
        self.init_encoder(backbone, neck, in_indices, feature_spec)
        width = self.out_channels[0] if self.neck is not None else self.backbone_channels[-1]
        head.setdefault('in_channels', int(width))
        self.head = build_head(head)
        self.num_classes = self.head.num_classes
        if not self.metainfo.get('classes'):
            self.metainfo['classes'] = [str(i) for i in range(self.num_classes)]
        self.init_report: dict[str, list[str]] | None = None
        if init_from is not None:
            self.init_report = self.load_matching(init_from)

    def load_matching(self, path: str) -> dict[str, list[str]]:
        """Load the tensors of checkpoint ``path`` whose names and shapes match this model.

        Returns:
            ``{'loaded': [...], 'skipped_shape': [...], 'missing': [...]}`` key lists.

        Raises:
            CheckpointError: unreadable file, or no tensor in common.
        """
        from ...backbones.pretrained import read_state_dict, strip_prefixes
        from ...errors import CheckpointError
        sd = strip_prefixes(read_state_dict(path), ('module.',))  # a whole detector: keep 'backbone.' names
        own = self.state_dict()
        loaded = [k for k, v in sd.items() if k in own and own[k].shape == v.shape]
        skipped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
        if not loaded:
            raise CheckpointError(f"Detector init_from {path!r}: no tensor matches the model by name and shape.")
        self.load_state_dict({k: sd[k] for k in loaded}, strict=False)
        if skipped:
            warnings.warn(f"Detector init_from {path!r}: {len(skipped)} tensors differ in shape and keep their "
                          f"initialisation: {', '.join(skipped[:6])}", UserWarning, stacklevel=2)
        return {'loaded': loaded, 'skipped_shape': skipped, 'missing': [k for k in own if k not in sd]}

    def extract_feats(self, images: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) normalised images -> the encoder's maps (FPN levels); see :meth:`Encoder.encode`."""
        return self.encode(images)

    def forward(self, batch: dict[str, Any], feats: Sequence[Tensor] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training) or detections (eval) for a collated batch (see docs/design.md).

        ``batch['images']`` (N, 3, H, W) uint8 is normalised here, on the model's device. ``feats``: the
        backbone outputs of those images, already computed (a multi-task model's shared backbone); then the
        images are not looked at.
        """
        if feats is None:
            feats = self.run_backbone(self.normalizer(batch['images'], image_sizes(batch)))
        feats = self.encode(feats=feats)
        if self.training:
            losses = self.head.loss(feats, batch['boxes'], batch['labels'], batch.get('ignore'))
            losses = {k: v.float() for k, v in losses.items()}
            return {'loss': sum(losses.values()), **losses}
        return self.head.predict(feats, batch['metas'])
