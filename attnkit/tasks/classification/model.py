"""``ImageClassifier``: backbone (+ neck) -> classification head -> class logits.

Training: ``model(batch)`` -> ``{'loss', 'loss_cls'}``: cross-entropy with label smoothing (single-label) or
binary cross-entropy per class (multi-label, ignored entries left out), after mixup / cutmix when configured.
Evaluation: ``model(batch)`` -> one dict per image: ``scores`` (K,) float32 (softmax, or sigmoid for multi-label),
``label`` (the top-1 class, 0-dim int64; multi-label: (K,) bool ``scores >= multi_label_thr``) and ``topk``
(k,) int64 (classes by decreasing score, k = min(topk, K)).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ...builder import build_head
from ...data.normalize import build_normalizer, image_sizes
from ...errors import ConfigError
from ...registry import MODELS
from ..encoder import Encoder, FeatureSpec
from .mixup import build_mixup

__all__ = ['ImageClassifier']


@MODELS.register_module('ImageClassifier')
class ImageClassifier(Encoder):
    """An image classifier.

    Args:
        backbone: backbone config (e.g. ``dict(type='ResNet', depth=18, out_indices=(3,))``); the head reads its
            last map.
        head: head config from HEADS (``linear``, ``attnpool``, ``class_attention``, ``ml_decoder``);
            ``in_channels`` (the last map's channels) and ``num_classes`` are filled in.
        neck: optional neck config (``in_channels`` / ``in_strides`` default to the backbone's); the head reads
            the neck's last output.
        metainfo: ``{'classes': [...], 'multi_label': bool}`` from the training set or the checkpoint.
        normalize: ``dict(mean=(r, g, b), std=(r, g, b))`` on a 0..255 scale (default ImageNet's): the batch's uint8
            images are normalised on the model's device (:mod:`attnkit.data.normalize`).
        label_smoothing: epsilon of label smoothing (single-label: towards the uniform distribution; multi-label:
            each target towards 0.5).
        mixup: ``dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch')``: timm's
            ``Mixup`` in training, seeded per batch (:mod:`attnkit.tasks.classification.mixup`); ``None`` = off.
        multi_label: sigmoid / BCE instead of softmax / cross-entropy; default ``metainfo['multi_label']``.
        num_classes: K when there is no metainfo.
        topk: how many classes ``topk`` lists per image in evaluation.
        multi_label_thr: score from which a class counts as predicted (multi-label ``label``).
        in_indices, feature_spec: see :class:`~attnkit.tasks.encoder.Encoder` (the backbone and neck are wired by
            that contract; ``backbone=None`` + ``feature_spec`` for a branch on a shared backbone, without mixup).

    Raises:
        ConfigError: no classes, a head ``num_classes`` or ``multi_label`` that contradicts the data, a bad mixup
            or label smoothing setting.
    """

    def __init__(self, backbone: Mapping[str, Any] | None, head: Mapping[str, Any],
                 neck: Mapping[str, Any] | None = None,
                 metainfo: Mapping[str, Any] | None = None, normalize: Mapping[str, Any] | None = None,
                 label_smoothing: float = 0.0, mixup: Mapping[str, Any] | None = None,
                 multi_label: bool | None = None, num_classes: int | None = None, topk: int = 5,
                 multi_label_thr: float = 0.5, in_indices: Sequence[int] | None = None,
                 feature_spec: FeatureSpec | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.normalizer = build_normalizer(normalize)
        meta = dict(metainfo or {})
        classes = [str(c) for c in meta.get('classes') or []]
        head = dict(head)
        k = num_classes if num_classes is not None else head.get('num_classes')
        if classes and k is not None and int(k) != len(classes):
            raise ConfigError(f'ImageClassifier: num_classes={k} but the dataset has {len(classes)} classes.')
        if not classes:
            if k is None:
                raise ConfigError("ImageClassifier: no classes: pass metainfo={'classes': [...]} or num_classes.")
            classes = [str(i) for i in range(int(k))]
        data_multi = meta.get('multi_label')
        if multi_label is not None and data_multi is not None and bool(multi_label) != bool(data_multi):
            raise ConfigError(f'ImageClassifier: multi_label={multi_label} but the dataset is '
                              f"{'multi' if data_multi else 'single'}-label.")
        self.multi_label = bool(multi_label if multi_label is not None else data_multi)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f'ImageClassifier: label_smoothing must be in [0, 1), got {label_smoothing!r}.')
        self.label_smoothing = float(label_smoothing)
        self.metainfo: dict[str, Any] = {'classes': classes, 'multi_label': self.multi_label}
        self.num_classes = len(classes)
        self.topk = max(1, int(topk))
        self.multi_label_thr = float(multi_label_thr)

        if backbone is None and mixup is not None:
            raise ConfigError('ImageClassifier without its own backbone (a multi-task branch) cannot use mixup: it '
                              'mixes images before the backbone.')
        self.init_encoder(backbone, neck, in_indices, feature_spec)
        head['num_classes'] = self.num_classes
        head.setdefault('in_channels', int(self.out_channels[-1]))
        self.head = build_head(head)
        self.mixup = build_mixup(mixup, self.num_classes, self.label_smoothing, self.multi_label)

    # ------------------------------------------------------------------------------------------- features
    def extract_feat(self, images: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) normalised images -> the backbone's (or neck's) maps; the head reads the last one."""
        return self.encode(images)

    def logits(self, images: Tensor | None, feats: Sequence[Tensor] | None = None) -> Tensor:
        """(N, 3, H, W) normalised images (or all their backbone outputs ``feats``) -> (N, K) float logits."""
        return self.head(self.encode(images, feats))

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, batch: Mapping[str, Any], feats: Sequence[Tensor] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training) or per-image predictions (eval) for a collated batch.

        Args:
            batch: ``images`` (N, 3, H, W) uint8 (normalised here), ``labels`` (N,) int64 or (N, K) float32
                (training), ``metas`` (``batch_seed`` seeds mixup).
            feats: the backbone outputs of those images, already computed (a multi-task model's shared
                backbone); then the images are not looked at.
        """
        if feats is not None:
            if self.training:
                return self.loss(None, batch['labels'], feats=feats)
            return self.predict(None, feats)
        images = self.normalizer(batch['images'], image_sizes(batch))
        if self.training:
            return self.loss(images, batch['labels'], _batch_seed(batch))
        return self.predict(images)

    def loss(self, images: Tensor | None, labels: Tensor, seed: int | None = None,
             feats: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """``{'loss', 'loss_cls'}`` of normalised ``images`` against ``labels`` (mixup first when configured).

        ``feats``: all backbone outputs of the images when already computed (then no mixup: it mixes images).
        """
        labels = labels.to(images.device if feats is None else feats[0].device)
        valid = None
        if self.mixup is not None and feats is None:
            images, target, valid = self.mixup(images, labels, seed)
        elif self.multi_label:
            valid = labels >= 0
            target = labels.clamp(min=0).float() * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        else:
            target = None
        logits = self.logits(images, feats).float()
        if self.multi_label:
            per = F.binary_cross_entropy_with_logits(logits, target, reduction='none')
            if valid is not None:
                per = per * valid
                loss = per.sum() / valid.sum().clamp(min=1)
            else:
                loss = per.mean()
        elif target is None:
            loss = F.cross_entropy(logits, labels.long(), label_smoothing=self.label_smoothing)
        else:
            loss = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return {'loss': loss, 'loss_cls': loss.detach()}

    @torch.no_grad()
    def predict(self, images: Tensor | None, feats: Sequence[Tensor] | None = None) -> list[dict[str, Tensor]]:
        """Per image ``{'scores': (K,), 'label', 'topk': (k,)}`` (see the module docstring)."""
        logits = self.logits(images, feats).float()
        scores = logits.sigmoid() if self.multi_label else logits.softmax(-1)
        k = min(self.topk, self.num_classes)
        top = scores.topk(k, dim=-1).indices
        out = []
        for i in range(scores.shape[0]):
            label = scores[i] >= self.multi_label_thr if self.multi_label else scores[i].argmax()
            out.append({'scores': scores[i], 'label': label, 'topk': top[i]})
        return out


def _batch_seed(batch: Mapping[str, Any]) -> int | None:
    metas = batch.get('metas') or []
    seed = metas[0].get('batch_seed') if metas and isinstance(metas[0], Mapping) else None
    return int(seed) if seed is not None else None

