"""The semantic segmentation model: backbone (+ neck) + decode head (+ auxiliary head).

Training: ``model(batch)`` -> ``{'loss': total, 'loss_seg': ..., 'loss_seg_pam': ..., 'loss_aux': ...}``.
Evaluation: ``model(batch)`` -> per image ``{'sem_seg': (H0, W0) long}`` at the original image size:
logits on the padded batch (whole image or sliding window, optionally flip / multi-scale averaged) are
cropped to the image's ``img_size`` (undoing the collate padding), resized to ``ori_size``, then argmax'd.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from ...builder import build_head
from ...data.normalize import build_normalizer, image_sizes
from ...errors import ConfigError
from ...registry import MODELS
from ..encoder import Encoder, FeatureSpec

__all__ = ['Segmentor']


@MODELS.register_module()
class Segmentor(Encoder):
    """Encoder-decoder semantic segmentor.

    Args:
        backbone: backbone config (e.g. ``dict(type='ResNet', depth=50, output_stride=8, ...)``).
        decode_head: head config (``fcn``, ``danet``, ``ccnet``, ``semantic_fpn``, ``deeplabv3plus``);
            ``in_channels`` and ``num_classes`` default to the features' channels and the class count.
        neck: optional neck config (``FPN``, ``ASPP``); ``in_channels`` defaults to the backbone's.
        auxiliary_head: optional head (usually ``fcn`` on layer3 with ``loss_weight=0.4``).
        metainfo: ``classes`` (gives K) and ``palette``; saved in checkpoints.
        num_classes: K when there is no metainfo.
        test_mode: ``'whole'`` or ``'slide'`` (sliding window of ``crop_size`` (h, w) every ``stride`` (h, w)).
        tta_flip: also predict on the horizontally flipped image and average.
        tta_scales: image scales to predict at and average (1.0 = as given).
        align_corners: bilinear resizing mode.
        normalize: ``dict(mean=(r, g, b), std=(r, g, b))`` on a 0..255 scale (default ImageNet's): ``forward``
            normalises the batch's uint8 ``images`` on the model's device (:mod:`attnkit.data.normalize`);
            ``loss``, ``predict`` and ``encode_decode`` take normalised float images.
        in_indices, feature_spec: see :class:`~attnkit.tasks.encoder.Encoder` (which backbone outputs are used;
            ``backbone=None`` + ``feature_spec`` for a branch on a shared backbone, which predicts from the shared
            features of the whole image: ``test_mode='whole'`` without TTA).

    Wiring (the :class:`~attnkit.tasks.encoder.Encoder` contract): the decode head reads the encoder outputs
    (the neck's, or the selected backbone maps), the auxiliary head the selected backbone maps.
    """

    def __init__(self, backbone: Mapping[str, Any] | None, decode_head: Mapping[str, Any],
                 neck: Mapping[str, Any] | None = None, auxiliary_head: Mapping[str, Any] | None = None,
                 metainfo: Mapping[str, Any] | None = None, num_classes: int | None = None,
                 test_mode: str = 'whole', crop_size: Sequence[int] | None = None,
                 stride: Sequence[int] | None = None, tta_flip: bool = False,
                 tta_scales: Sequence[float] = (1.0,), align_corners: bool = False,
                 normalize: Mapping[str, Any] | None = None, in_indices: Sequence[int] | None = None,
                 feature_spec: FeatureSpec | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.normalizer = build_normalizer(normalize)
        classes = list((metainfo or {}).get('classes') or [])
        if classes and num_classes is not None and num_classes != len(classes):
            raise ConfigError(f"Segmentor: num_classes={num_classes} but metainfo has {len(classes)} classes.")
        if not classes:
            if num_classes is None:
                raise ConfigError("Segmentor needs metainfo=dict(classes=[...]) or num_classes.")
            classes = [str(i) for i in range(num_classes)]
        self.metainfo: dict[str, Any] = {'classes': [str(c) for c in classes]}
        if metainfo and metainfo.get('palette'):
            self.metainfo['palette'] = [list(map(int, c)) for c in metainfo['palette']]
        self.num_classes = len(classes)
        if test_mode not in ('whole', 'slide'):
            raise ConfigError(f"Segmentor: test_mode must be 'whole' or 'slide', got {test_mode!r}.")
        if test_mode == 'slide' and (crop_size is None or stride is None):
            raise ConfigError("Segmentor: test_mode='slide' needs crop_size=(h, w) and stride=(h, w).")
        self.test_mode = test_mode
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.stride = tuple(stride) if stride is not None else None
        self.tta_flip = tta_flip
        self.tta_scales = tuple(float(s) for s in tta_scales)
        self.align_corners = align_corners

        if backbone is None and (test_mode == 'slide' or tta_flip or tuple(self.tta_scales) != (1.0,)):
            raise ConfigError("Segmentor without its own backbone (a multi-task branch) predicts from the shared "
                              "backbone's features of the whole image: use test_mode='whole' without tta_flip / "
                              "tta_scales.")

        self.init_encoder(backbone, neck, in_indices, feature_spec)
        self.decode_head = build_head(decode_head, in_channels=self.out_channels, num_classes=self.num_classes)
        self.auxiliary_head = (build_head(auxiliary_head, in_channels=self.backbone_channels,
                                          num_classes=self.num_classes)
                               if auxiliary_head is not None else None)

    # -- training ----------------------------------------------------------------------------------
    def extract_feat(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Selected backbone features (the neck is applied by the callers: the auxiliary head reads these)."""
        return self.backbone_features(images)

    def forward(self, batch: Mapping[str, Any], feats: Sequence[torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training mode, per-image predictions in eval mode (see module docstring).

        Args:
            batch: ``images`` (N, 3, H, W) uint8 (normalised here); ``masks`` (N, H, W) long for training;
                ``metas`` for evaluation.
            feats: the backbone outputs of those images, already computed (a multi-task model's shared
                backbone); the images then only give the output size.
        """
        if feats is not None:
            images = batch['images']
            if self.training:
                return self.loss(images, batch['masks'], feats=feats)
            return self.predict(images, batch['metas'], feats=feats)
        images = self.normalizer(batch['images'], image_sizes(batch))
        if self.training:
            return self.loss(images, batch['masks'])
        return self.predict(images, batch['metas'])

    def loss(self, images: torch.Tensor, masks: torch.Tensor,
             feats: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Weighted cross-entropy of the decode head (and auxiliary head); ``'loss'`` is their sum.

        ``feats``: all backbone outputs of ``images`` when already computed (then ``images`` is not used).
        """
        feats = self.backbone_features(images, feats)
        head_feats = self.forward_neck(feats)
        losses = dict(self.decode_head.loss(self.decode_head(head_feats), masks))
        if self.auxiliary_head is not None:
            for key, value in self.auxiliary_head.loss(self.auxiliary_head(feats), masks).items():
                losses[key if key not in losses else f'{key}_aux'] = value
        losses = {'loss': sum(losses.values()), **losses}
        return losses

    # -- inference ---------------------------------------------------------------------------------
    def encode_decode(self, images: torch.Tensor, feats: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(N, 3, H, W) -> (N, K, H, W) float32 logits of the decode head, upsampled to the input size.

        ``feats``: all backbone outputs of ``images`` when already computed (only the size of ``images`` is used).
        """
        feats = self.encode(images, feats)
        logits = self.decode_head(feats)['seg'].float()
        return F.interpolate(logits, size=images.shape[-2:], mode='bilinear', align_corners=self.align_corners)

    def slide_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits (N, K, H, W): windows of ``crop_size`` every ``stride``, overlaps averaged."""
        assert self.crop_size is not None and self.stride is not None
        (ch, cw), (sh, sw) = self.crop_size, self.stride
        n, _, h, w = images.shape
        rows = max(h - ch + sh - 1, 0) // sh + 1
        cols = max(w - cw + sw - 1, 0) // sw + 1
        out = images.new_zeros((n, self.num_classes, h, w), dtype=torch.float32)
        count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
                y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
                out[:, :, y1:y2, x1:x2] += self.encode_decode(images[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
        return out / count

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.slide_logits(images) if self.test_mode == 'slide' else self.encode_decode(images)

    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor, feats: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(N, K, H, W) scores on the padded batch: logits, or mean softmax over flip / scale variants.

        ``feats``: all backbone outputs of ``images`` when already computed (whole-image mode without TTA only).
        """
        variants = [(s, f) for s in self.tta_scales for f in ((False, True) if self.tta_flip else (False,))]
        if feats is not None:
            if variants != [(1.0, False)] or self.test_mode != 'whole':
                raise ConfigError("Segmentor: given backbone features support test_mode='whole' without TTA only.")
            return self.encode_decode(images, feats)
        if variants == [(1.0, False)]:
            return self._logits(images)
        size = images.shape[-2:]
        total = None
        for scale, flip in variants:
            x = images if scale == 1.0 else F.interpolate(images, scale_factor=scale, mode='bilinear',
                                                          align_corners=self.align_corners)
            x = x.flip(-1) if flip else x
            logits = self._logits(x)
            logits = logits.flip(-1) if flip else logits
            probs = F.interpolate(logits, size=size, mode='bilinear', align_corners=self.align_corners).softmax(1)
            total = probs if total is None else total + probs
        return total / len(variants)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, metas: Sequence[Mapping[str, Any]],
                feats: Sequence[torch.Tensor] | None = None) -> list[dict[str, torch.Tensor]]:
        """Per image ``{'sem_seg': (H0, W0) long}``: padding removed (``img_size``), resized to ``ori_size``."""
        scores = self.predict_logits(images, feats)
        return [{'sem_seg': self.postprocess(scores[i], meta)} for i, meta in enumerate(metas)]

    def postprocess(self, scores: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
        """(K, H', W') scores on the padded image -> (H0, W0) long labels at the original size."""
        h, w = meta.get('img_size', scores.shape[-2:])
        h0, w0 = meta.get('ori_size', (h, w))
        scores = scores[:, :h, :w]
        if (h, w) != (h0, w0):
            scores = F.interpolate(scores[None], size=(h0, w0), mode='bilinear',
                                   align_corners=self.align_corners)[0]
        # max(0).indices, not argmax(0): the same labels (the first maximum on ties) at ~1/8 of the time on the
        # CPU for a (K, H, W) map (argmax along a strided dim: 2.8 vs 0.34 ms at 5x128x128, torch 2.14, 1 thread)
        return scores.max(0).indices

