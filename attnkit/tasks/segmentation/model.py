"""The semantic segmentation model: backbone (+ neck) + decode head (+ auxiliary head).

Training: ``model(batch)`` -> ``{'loss': total, 'loss_seg': ..., 'loss_seg_pam': ..., 'loss_aux': ...}``.
Evaluation: ``model(batch)`` -> per image ``{'sem_seg': (H0, W0) long}`` at the original image size:
logits on the padded batch (whole image or sliding window, optionally flip / multi-scale averaged) are
cropped to the image's ``img_size`` (undoing the collate padding), resized to ``ori_size``, then argmax'd.
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...builder import build_backbone, build_head, build_neck
from ...data.normalize import build_normalizer, image_sizes
from ...errors import ConfigError
from ...registry import MODELS

__all__ = ['Segmentor']


def _accepts(obj: Any, arg: str) -> bool:
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return arg in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@MODELS.register_module()
class Segmentor(nn.Module):
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
    """

    def __init__(self, backbone: Mapping[str, Any], decode_head: Mapping[str, Any],
                 neck: Mapping[str, Any] | None = None, auxiliary_head: Mapping[str, Any] | None = None,
                 metainfo: Mapping[str, Any] | None = None, num_classes: int | None = None,
                 test_mode: str = 'whole', crop_size: Sequence[int] | None = None,
                 stride: Sequence[int] | None = None, tta_flip: bool = False,
                 tta_scales: Sequence[float] = (1.0,), align_corners: bool = False,
                 normalize: Mapping[str, Any] | None = None) -> None:
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

        self.backbone = build_backbone(backbone)
        channels = tuple(self.backbone.out_channels)
        self.neck = None
        if neck is not None:
            extra = {'in_channels': channels}
            neck_cls = _lookup_neck(neck)
            strides = getattr(self.backbone, 'strides', None)
            if strides is not None and 'in_strides' not in neck and _accepts(neck_cls, 'in_strides'):
                extra['in_strides'] = tuple(strides)
            self.neck = build_neck(neck, **extra)
            out = self.neck.out_channels
            channels = tuple(out) if not isinstance(out, int) else (out,) * len(channels)
        self.decode_head = build_head(decode_head, in_channels=channels, num_classes=self.num_classes)
        self.auxiliary_head = (build_head(auxiliary_head, in_channels=tuple(self.backbone.out_channels),
                                          num_classes=self.num_classes)
                               if auxiliary_head is not None else None)

    # -- training ----------------------------------------------------------------------------------
    def extract_feat(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backbone features (the neck is applied by the callers: the auxiliary head reads backbone features)."""
        feats = tuple(self.backbone(images))
        return feats

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training mode, per-image predictions in eval mode (see module docstring).

        Args:
            batch: ``images`` (N, 3, H, W) uint8 (normalised here); ``masks`` (N, H, W) long for training;
                ``metas`` for evaluation.
        """
        images = self.normalizer(batch['images'], image_sizes(batch))
        if self.training:
            return self.loss(images, batch['masks'])
        return self.predict(images, batch['metas'])

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted cross-entropy of the decode head (and auxiliary head); ``'loss'`` is their sum."""
        feats = self.extract_feat(images)
        head_feats = self.neck(feats) if self.neck is not None else feats
        losses = dict(self.decode_head.loss(self.decode_head(head_feats), masks))
        if self.auxiliary_head is not None:
            for key, value in self.auxiliary_head.loss(self.auxiliary_head(feats), masks).items():
                losses[key if key not in losses else f'{key}_aux'] = value
        losses = {'loss': sum(losses.values()), **losses}
        return losses

    # -- inference ---------------------------------------------------------------------------------
    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, K, H, W) float32 logits of the decode head, upsampled to the input size."""
        feats = self.extract_feat(images)
        if self.neck is not None:
            feats = self.neck(feats)
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
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) scores on the padded batch: logits, or mean softmax over flip / scale variants."""
        variants = [(s, f) for s in self.tta_scales for f in ((False, True) if self.tta_flip else (False,))]
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
    def predict(self, images: torch.Tensor, metas: Sequence[Mapping[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Per image ``{'sem_seg': (H0, W0) long}``: padding removed (``img_size``), resized to ``ori_size``."""
        scores = self.predict_logits(images)
        return [{'sem_seg': self.postprocess(scores[i], meta)} for i, meta in enumerate(metas)]

    def postprocess(self, scores: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
        """(K, H', W') scores on the padded image -> (H0, W0) long labels at the original size."""
        h, w = meta.get('img_size', scores.shape[-2:])
        h0, w0 = meta.get('ori_size', (h, w))
        scores = scores[:, :h, :w]
        if (h, w) != (h0, w0):
            scores = F.interpolate(scores[None], size=(h0, w0), mode='bilinear',
                                   align_corners=self.align_corners)[0]
        return scores.argmax(0)


def _lookup_neck(cfg: Mapping[str, Any]) -> Any:
    from ...registry import NECKS, get_registered
    t = cfg.get('type')
    return get_registered(NECKS, t) if isinstance(t, str) else t
