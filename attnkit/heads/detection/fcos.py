"""FCOS head (Tian et al., 2019) with the later improvements: centre sampling, ``norm_on_bbox``, centerness
on the regression branch, GIoU loss, GroupNorm towers.

Per FPN level l (stride s_l) and location (x, y) the head predicts C class logits, four distances
(left, top, right, bottom) to the box sides, and a centerness logit. Locations sit at ((x+0.5)s_l, (y+0.5)s_l).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from ...registry import HEADS
from ..dist import global_normalizer
from .utils import Scale, flatten_level, giou_loss, init_dense_head, make_tower, postprocess

__all__ = ['FCOSHead', 'level_points']

INF = 1e8


def level_points(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device) -> list[Tensor]:
    """Per level, the (H*W, 2) xy centres of the feature map cells in input pixels (row-major)."""
    points = []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing='ij')
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
    return points


@HEADS.register_module('FCOSHead')
class FCOSHead(nn.Module):
    """FCOS head.

    Args:
        num_classes: number of object classes (no background class: sigmoid classifiers).
        in_channels: channels of every FPN level.
        feat_channels: tower width.
        stacked_convs: convs per tower.
        strides: FPN strides, one per level (default 8..128).
        regress_ranges: per level (lo, hi): a location is assigned an object only when its largest
            distance to the box sides lies in (lo, hi].
        center_sampling: positives only within ``center_sample_radius * stride`` of the box centre.
        norm_on_bbox: predict distances in units of the level stride through a ReLU (else exp, in pixels).
        centerness_on_reg: centerness branch on the regression tower (else on the classification tower).
        norm: ``'GN'`` or ``None`` for the towers.
        focal_alpha, focal_gamma: focal loss parameters.
        loss_weights: multipliers for ``cls``, ``bbox``, ``centerness``.
        score_thr, nms_pre, iou_thr, max_per_img: post-processing (see :func:`postprocess`).
        prior_prob: initial foreground probability of the classifier.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256, stacked_convs: int = 4,
                 strides: Sequence[int] = (8, 16, 32, 64, 128),
                 regress_ranges: Sequence[tuple[float, float]] = ((-1, 64), (64, 128), (128, 256), (256, 512),
                                                                 (512, INF)),
                 center_sampling: bool = True, center_sample_radius: float = 1.5, norm_on_bbox: bool = True,
                 centerness_on_reg: bool = True, norm: str | None = 'GN', focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, loss_weights: dict[str, float] | None = None, score_thr: float = 0.05,
                 nms_pre: int = 1000, iou_thr: float = 0.6, max_per_img: int = 100, prior_prob: float = 0.01) -> None:
        super().__init__()
        if len(strides) != len(regress_ranges):
            raise ValueError(f"FCOSHead: {len(strides)} strides but {len(regress_ranges)} regress_ranges")
        if num_classes < 1:
            raise ValueError(f"FCOSHead: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.regress_ranges = tuple((float(lo), float(hi)) for lo, hi in regress_ranges)
        # per-level tables as buffers: they follow the model to its device, so no per-step host-to-device copy
        self.register_buffer('_level_strides', torch.tensor(self.strides, dtype=torch.float32), persistent=False)
        self.register_buffer('_level_ranges', torch.tensor(self.regress_ranges, dtype=torch.float32),
                             persistent=False)
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_weights = {'cls': 1.0, 'bbox': 1.0, 'centerness': 1.0, **(loss_weights or {})}
        self.test_cfg = dict(score_thr=score_thr, nms_pre=nms_pre, iou_thr=iou_thr, max_per_img=max_per_img)

        self.cls_tower = make_tower(in_channels, feat_channels, stacked_convs, norm)
        self.reg_tower = make_tower(in_channels, feat_channels, stacked_convs, norm)
        self.cls_logits = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        init_dense_head(self, self.cls_logits, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Raw outputs per level.

        Args:
            feats: FPN maps (N, in_channels, H_l, W_l), one per stride.

        Returns:
            cls logits (N, C, H_l, W_l), distances (N, 4, H_l, W_l) in input pixels (≥ 0), centerness logits
            (N, 1, H_l, W_l).
        """
        if len(feats) != len(self.strides):
            raise ValueError(f"FCOSHead: got {len(feats)} feature maps for {len(self.strides)} strides")
        cls_out, reg_out, ctr_out = [], [], []
        for x, scale, stride in zip(feats, self.scales, self.strides):
            c = self.cls_tower(x)
            r = self.reg_tower(x)
            cls_out.append(self.cls_logits(c))
            ctr_out.append(self.centerness(r if self.centerness_on_reg else c))
            d = scale(self.bbox_pred(r)).float()
            reg_out.append(F.relu(d) * stride if self.norm_on_bbox else d.clamp(max=math.log(INF)).exp())
        return cls_out, reg_out, ctr_out

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def get_targets(self, points: Tensor, level_ids: Tensor, boxes: Tensor, labels: Tensor, ignore: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Assign every location to at most one object (the smallest one that qualifies).

        Tensor ops only (no host synchronisation): ignore boxes stay in the (P, K) matrices and are masked.

        Args:
            points: (P, 2) all levels' locations; level_ids: (P,) their level index.
            boxes: (K, 4) xyxy; labels: (K,); ignore: (K,) bool (never made positive).

        Returns:
            label per location (P,) with ``num_classes`` = background, assigned box (P, 4) (meaningful at
            positives only), and a (P,) bool mask of locations to leave out of the classification loss (inside
            an ignore box, not positive).
        """
        num_points = points.shape[0]
        bg = torch.full((num_points,), self.num_classes, dtype=torch.long, device=points.device)
        if boxes.shape[0] == 0:  # a host-side shape, not a device value
            return bg, points.new_zeros((num_points, 4)), torch.zeros(num_points, dtype=torch.bool,
                                                                      device=points.device)
        gt = boxes.float()
        ignore = ignore.bool()
        x, y = points[:, 0:1], points[:, 1:2]  # (P, 1)
        in_box = (x > gt[:, 0]) & (y > gt[:, 1]) & (x < gt[:, 2]) & (y < gt[:, 3])  # (P, K)
        excluded = (in_box & ignore).any(dim=1)
        ltrb = torch.stack([x - gt[:, 0], y - gt[:, 1], gt[:, 2] - x, gt[:, 3] - y], dim=2)  # (P, K, 4)
        if self.center_sampling:
            strides = self._level_strides.to(points)[level_ids][:, None] * self.center_sample_radius  # (P, 1)
            cx, cy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
            x0 = torch.maximum(cx - strides, gt[:, 0])
            y0 = torch.maximum(cy - strides, gt[:, 1])
            x1 = torch.minimum(cx + strides, gt[:, 2])
            y1 = torch.minimum(cy + strides, gt[:, 3])
            inside = (x > x0) & (y > y0) & (x < x1) & (y < y1)
        else:
            inside = ltrb.min(dim=2).values > 0
        max_dist = ltrb.max(dim=2).values
        ranges = self._level_ranges.to(points)[level_ids]  # (P, 2)
        in_range = (max_dist > ranges[:, 0:1]) & (max_dist <= ranges[:, 1:2])
        areas = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[None]  # (1, K)
        areas = torch.where(inside & in_range & ~ignore, areas, torch.full_like(areas, INF))  # (P, K)
        min_area, idx = areas.min(dim=1)
        pos = min_area < INF
        target_labels = torch.where(pos, labels.to(bg.device)[idx], bg)
        return target_labels, gt[idx], excluded & ~pos

    def loss(self, feats: Sequence[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor],
             ignore: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal + GIoU (weighted by centerness targets) + centerness BCE losses.

        Normalisers are global over the processes (:func:`~attnkit.heads.dist.global_normalizer`): the number
        of positives for the focal and centerness losses, the sum of the positives' centerness targets for the
        GIoU loss, so W processes with batch b train exactly like one with batch W·b. Every location is
        computed densely and masked (no boolean indexing, no ``.item()``): no host synchronisation.

        Args:
            feats: FPN maps (N, C_in, H_l, W_l).
            boxes: per image (K_i, 4) xyxy in input pixels; labels: per image (K_i,); ignore: per image (K_i,) bool.

        Returns:
            ``loss_cls``, ``loss_bbox``, ``loss_centerness`` (float32 scalars, finite for images without objects).
        """
        cls_out, reg_out, ctr_out = self(feats)
        n = cls_out[0].shape[0]
        device = cls_out[0].device
        sizes = [tuple(c.shape[-2:]) for c in cls_out]
        pts = level_points(sizes, self.strides, device)
        points = torch.cat(pts)
        level_ids = torch.cat([torch.full((p.shape[0],), i, device=device, dtype=torch.long)
                               for i, p in enumerate(pts)])
        cls = torch.cat([flatten_level(c, self.num_classes) for c in cls_out], 1).float()  # (N, P, C)
        reg = torch.cat([flatten_level(r, 4) for r in reg_out], 1).float()  # (N, P, 4)
        ctr = torch.cat([flatten_level(c, 1) for c in ctr_out], 1).float().squeeze(2)  # (N, P)

        if ignore is None:
            ignore = [torch.zeros(len(b), dtype=torch.bool, device=device) for b in boxes]
        tgt_labels, tgt_boxes, excluded = [], [], []
        for b, l, ig in zip(boxes, labels, ignore):
            t = self.get_targets(points, level_ids, b.to(device), l.to(device), ig.to(device).bool())
            tgt_labels.append(t[0]), tgt_boxes.append(t[1]), excluded.append(t[2])
        tgt_labels = torch.stack(tgt_labels)  # (N, P)
        pos = tgt_labels < self.num_classes  # (N, P)
        valid = ~torch.stack(excluded)  # (N, P)
        p = points[None].expand(n, -1, -1)  # (N, P, 2)
        # non-positive locations get a harmless 2x2 target box round their point: every term below stays finite
        # (so its masked-out gradient is an exact zero, never 0 * nan)
        safe = torch.cat([p - 1.0, p + 1.0], dim=2)
        gt = torch.where(pos[..., None], torch.stack(tgt_boxes), safe)  # (N, P, 4)
        num_pos = global_normalizer(pos.sum(), 1.0)

        onehot = (tgt_labels[..., None] == torch.arange(self.num_classes, device=device)).to(cls.dtype)  # (N, P, C)
        focal = sigmoid_focal_loss(cls, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction='none')
        loss_cls = (focal.sum(dim=2) * valid).sum() / num_pos

        pred_boxes = torch.cat([p - reg[..., :2], p + reg[..., 2:]], dim=2)  # (N, P, 4)
        lr = torch.stack([p[..., 0] - gt[..., 0], gt[..., 2] - p[..., 0]], 2)  # (N, P, 2)
        tb = torch.stack([p[..., 1] - gt[..., 1], gt[..., 3] - p[..., 1]], 2)
        ctr_t = ((lr.min(2).values / lr.max(2).values).clamp(min=0) *
                 (tb.min(2).values / tb.max(2).values).clamp(min=0)).sqrt() * pos  # (N, P), 0 off positives
        loss_bbox = (giou_loss(pred_boxes, gt) * ctr_t).sum() / global_normalizer(ctr_t.sum(), 1e-6)
        bce = F.binary_cross_entropy_with_logits(ctr, ctr_t, reduction='none')
        loss_ctr = (bce * pos).sum() / num_pos
        w = self.loss_weights
        return {'loss_cls': loss_cls * w['cls'], 'loss_bbox': loss_bbox * w['bbox'],
                'loss_centerness': loss_ctr * w['centerness']}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, feats: Sequence[Tensor], metas: Sequence[dict[str, Any]]) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in original-image pixels.

        Scores are sqrt(sigmoid(cls) · sigmoid(centerness)).
        """
        cls_out, reg_out, ctr_out = self(feats)
        sizes = [tuple(c.shape[-2:]) for c in cls_out]
        pts = level_points(sizes, self.strides, cls_out[0].device)
        results = []
        for i, meta in enumerate(metas):
            scores, boxes = [], []
            for c, r, t, p in zip(cls_out, reg_out, ctr_out, pts):
                s = (flatten_level(c[i:i + 1], self.num_classes)[0].float().sigmoid() *
                     flatten_level(t[i:i + 1], 1)[0].float().sigmoid()).sqrt()
                d = flatten_level(r[i:i + 1], 4)[0]
                scores.append(s)
                boxes.append(torch.cat([p - d[:, :2], p + d[:, 2:]], dim=1))
            results.append(postprocess(scores, boxes, meta, **self.test_cfg))
        return results
