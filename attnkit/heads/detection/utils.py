"""Helpers shared by the dense detection heads: layout changes, towers, post-processing."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

__all__ = ['flatten_level', 'init_dense_head', 'make_tower', 'Scale', 'postprocess', 'rescale_boxes', 'gn_groups',
           'giou_loss']


def gn_groups(channels: int, preferred: int = 32) -> int:
    """The GroupNorm group count: ``preferred`` when it divides ``channels``, else their gcd."""
    return preferred if channels % preferred == 0 else math.gcd(channels, preferred)


def make_tower(in_channels: int, channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    """``num_convs`` × (3x3 conv → [GroupNorm] → ReLU).

    Args:
        norm: ``'GN'`` for GroupNorm (the conv then has no bias) or ``None``.
    """
    if norm not in (None, 'GN'):
        raise ValueError(f"Detection head tower: norm must be 'GN' or None, got {norm!r}")
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=norm is None))
        if norm == 'GN':
            layers.append(nn.GroupNorm(gn_groups(channels), channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def init_dense_head(head: nn.Module, cls_logits: nn.Conv2d, prior_prob: float) -> None:
    """Dense-head initialisation (RetinaNet/FCOS): every conv N(0, 0.01) with zero bias, and the classifier
    bias set so that each sigmoid starts at ``prior_prob`` (focal loss is stable from the first step)."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.constant_(cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))


class Scale(nn.Module):
    """A learnable scalar multiplier (one per FPN level)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype)


def flatten_level(x: Tensor, last: int) -> Tensor:
    """(N, A*last, H, W) → (N, H*W*A, last), ordered by row, column, anchor.

    For a channels_last input the permute is already contiguous, so this is a view.
    """
    n = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(n, -1, last)


def giou_loss(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Elementwise generalized-IoU loss ``1 - GIoU`` of paired xyxy boxes (..., 4), (..., 4) -> (...).

    The values and gradients of ``torchvision.ops.generalized_box_iou_loss(reduction='none')``, but without its
    boolean-mask indexing (a host synchronisation on a GPU): the empty-intersection case is a ``torch.where``.
    """
    x1, y1, x2, y2 = boxes1.float().unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.float().unbind(dim=-1)
    w = torch.min(x2, x2g) - torch.max(x1, x1g)
    h = torch.min(y2, y2g) - torch.max(y1, y1g)
    inter = torch.where((w > 0) & (h > 0), w * h, torch.zeros_like(w))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    area_c = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return 1 - (iou - (area_c - union) / (area_c + eps))


def rescale_boxes(boxes: Tensor, meta: dict[str, Any]) -> Tensor:
    """Boxes from the network input's pixels to the original image's: undo ``scale_factor``, clip to ``ori_size``."""
    sx, sy = meta.get('scale_factor', (1.0, 1.0))
    boxes = boxes / boxes.new_tensor([sx, sy, sx, sy])
    h0, w0 = meta['ori_size']
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w0)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h0)
    return boxes


def postprocess(level_scores: Sequence[Tensor], level_boxes: Sequence[Tensor] | None, meta: dict[str, Any], *,
                score_thr: float, nms_pre: int, iou_thr: float, max_per_img: int,
                decode: Any = None) -> dict[str, Tensor]:
    """Score threshold, per-level top-k, class-wise NMS, max detections, boxes in original-image pixels.

    Args:
        level_scores: per level, (P_l, C) class scores in [0, 1] for one image.
        level_boxes: per level, (P_l, 4) decoded xyxy boxes in input pixels; or ``None`` with ``decode``.
        meta: the image's meta (``scale_factor``, ``ori_size``; ``img_size`` clips before rescaling).
        decode: ``decode(level, idx) -> (k, 4)`` boxes for the kept positions ``idx`` of ``level``; lets a
            head decode only the top-k candidates.

    Returns:
        ``boxes`` (K, 4) float32 in original pixels, ``scores`` (K,), ``labels`` (K,) long; K ≤ max_per_img.
    """
    all_boxes, all_scores, all_labels = [], [], []
    for lvl, scores in enumerate(level_scores):
        scores = scores.float()
        num_classes = scores.shape[1]
        flat = scores.reshape(-1)
        keep = torch.nonzero(flat > score_thr).squeeze(1)
        if keep.numel() > nms_pre:
            top = flat[keep].topk(nms_pre).indices
            keep = keep[top]
        pos, labels = keep // num_classes, keep % num_classes
        boxes = decode(lvl, pos) if decode is not None else level_boxes[lvl][pos]
        all_boxes.append(boxes.float())
        all_scores.append(flat[keep])
        all_labels.append(labels)
    boxes = torch.cat(all_boxes) if all_boxes else level_scores[0].new_zeros((0, 4))
    scores = torch.cat(all_scores) if all_scores else level_scores[0].new_zeros((0,))
    labels = torch.cat(all_labels) if all_labels else torch.zeros(0, dtype=torch.long)
    if 'img_size' in meta:
        h, w = meta['img_size']
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    keep = batched_nms(boxes, scores, labels, iou_thr)[:max_per_img]
    return {'boxes': rescale_boxes(boxes[keep], meta), 'scores': scores[keep], 'labels': labels[keep]}
