"""RetinaNet head (Lin et al., 2017): anchors per FPN level, focal loss, smooth-L1 or GIoU box loss."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, sigmoid_focal_loss

from ...registry import HEADS
from ..dist import global_normalizer
from .anchors import AnchorGenerator, decode_boxes, encode_boxes
from .utils import flatten_level, giou_loss, init_dense_head, make_tower, postprocess

__all__ = ['RetinaHead']


@HEADS.register_module('RetinaHead')
class RetinaHead(nn.Module):
    """RetinaNet head.

    Args:
        num_classes: object classes (sigmoid classifiers, no background class).
        in_channels, feat_channels, stacked_convs: FPN width, tower width, convs per tower.
        strides, ratios, octave_base_scale, scales_per_octave: the anchors (see :class:`AnchorGenerator`).
        pos_iou_thr, neg_iou_thr: an anchor is positive at IoU ≥ pos_iou_thr with its best object, negative
            below neg_iou_thr, ignored in between; every object also claims its best anchors (IoU ≥ min_pos_iou).
        ignore_iou_thr: anchors overlapping an ignore box (iscrowd/difficult) this much, and not positive,
            are left out of the classification loss.
        loss_bbox: ``'smooth_l1'`` (on deltas, ``beta``) or ``'giou'`` (on decoded boxes).
        norm: tower normalisation, ``None`` (RetinaNet) or ``'GN'``.
        score_thr, nms_pre, iou_thr, max_per_img: post-processing.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256, stacked_convs: int = 4,
                 strides: Sequence[int] = (8, 16, 32, 64, 128), ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 octave_base_scale: float = 4.0, scales_per_octave: int = 3, pos_iou_thr: float = 0.5,
                 neg_iou_thr: float = 0.4, min_pos_iou: float = 0.0, ignore_iou_thr: float = 0.5,
                 loss_bbox: str = 'smooth_l1', beta: float = 1.0 / 9, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, loss_weights: dict[str, float] | None = None, norm: str | None = None,
                 score_thr: float = 0.05, nms_pre: int = 1000, iou_thr: float = 0.5, max_per_img: int = 100,
                 prior_prob: float = 0.01) -> None:
        super().__init__()
        if loss_bbox not in ('smooth_l1', 'giou'):
            raise ValueError(f"RetinaHead: loss_bbox must be 'smooth_l1' or 'giou', got {loss_bbox!r}")
        if num_classes < 1:
            raise ValueError(f"RetinaHead: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.anchor_generator = AnchorGenerator(strides, ratios, octave_base_scale, scales_per_octave)
        self.num_anchors = self.anchor_generator.num_anchors
        self.pos_iou_thr, self.neg_iou_thr, self.min_pos_iou = pos_iou_thr, neg_iou_thr, min_pos_iou
        self.ignore_iou_thr = ignore_iou_thr
        self.loss_bbox_type, self.beta = loss_bbox, beta
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_weights = {'cls': 1.0, 'bbox': 1.0, **(loss_weights or {})}
        self.test_cfg = dict(score_thr=score_thr, nms_pre=nms_pre, iou_thr=iou_thr, max_per_img=max_per_img)

        self.cls_tower = make_tower(in_channels, feat_channels, stacked_convs, norm)
        self.reg_tower = make_tower(in_channels, feat_channels, stacked_convs, norm)
        self.cls_logits = nn.Conv2d(feat_channels, self.num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(feat_channels, self.num_anchors * 4, 3, padding=1)
        init_dense_head(self, self.cls_logits, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits (N, A*C, H_l, W_l) and box deltas (N, A*4, H_l, W_l)."""
        if len(feats) != len(self.strides):
            raise ValueError(f"RetinaHead: got {len(feats)} feature maps for {len(self.strides)} strides")
        return ([self.cls_logits(self.cls_tower(x)) for x in feats],
                [self.bbox_pred(self.reg_tower(x)) for x in feats])

    @torch.no_grad()
    def get_targets(self, anchors: Tensor, boxes: Tensor, labels: Tensor, ignore: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Max-IoU assignment, vectorised: one (K, A) IoU matrix, tensor ops only (no per-object loop, no
        host synchronisation).

        Ignore boxes stay in the matrix with IoU -1 for the assignment (they never win an anchor) and are
        read from it for the ignore test. Low-quality matches: every object whose best IoU is ≥ min_pos_iou
        and > 0 claims all anchors reaching that best IoU; an anchor claimed by several objects goes to the
        last one (as the per-object loop this replaces did).

        Args:
            anchors: (A, 4) xyxy; boxes: (K, 4) xyxy; labels: (K,) long; ignore: (K,) bool.

        Returns:
            label per anchor (A,) (``num_classes`` = background), matched box (A, 4) (meaningful at positives
            only), and a (A,) bool mask of anchors counted in the classification loss (positives and negatives).
        """
        num = anchors.shape[0]
        device = anchors.device
        if boxes.shape[0] == 0:  # a host-side shape, not a device value
            return (torch.full((num,), self.num_classes, dtype=torch.long, device=device), anchors.new_zeros((num, 4)),
                    torch.ones(num, dtype=torch.bool, device=device))
        gt = boxes.float()
        ignore = ignore.bool()
        iou_all = box_iou(gt, anchors)  # (K, A)
        iou = iou_all.masked_fill(ignore[:, None], -1.0)  # objects only
        max_iou, idx = iou.max(dim=0)  # (A,)
        pos = max_iou >= self.pos_iou_thr
        valid = (max_iou < self.neg_iou_thr) | pos
        gt_best = iou.max(dim=1).values  # (K,)
        qualifies = (gt_best >= self.min_pos_iou) & (gt_best > 0)  # (K,)
        claims = (iou == gt_best[:, None]) & qualifies[:, None]  # (K, A)
        order = torch.arange(1, gt.shape[0] + 1, device=device, dtype=torch.int32)[:, None]  # (K, 1): 1..K
        last = (claims * order).max(dim=0).values  # (A,): 1 + last claiming object, 0 = none
        claimed = last > 0
        idx = torch.where(claimed, last.long() - 1, idx)
        pos = pos | claimed
        valid = valid | pos
        labels_out = torch.where(pos, labels.to(device)[idx], torch.full_like(idx, self.num_classes))
        ig_iou = iou_all.masked_fill(~ignore[:, None], -1.0).max(dim=0).values  # (A,), -1 without ignore boxes
        valid = valid & ~((ig_iou >= self.ignore_iou_thr) & ~pos)
        return labels_out, gt[idx], valid

    def loss(self, feats: Sequence[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor],
             ignore: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal classification loss and box loss, both divided by the number of positive anchors.

        The number of positives is global over the processes (:func:`~attnkit.heads.dist.global_normalizer`),
        so W processes with batch b train exactly like one with batch W·b. Every anchor is computed densely
        and masked (no boolean indexing, no ``.item()``): no host synchronisation.

        Args:
            feats: FPN maps; boxes/labels/ignore: per image (K_i, 4) xyxy input pixels, (K_i,), (K_i,) bool.

        Returns:
            ``loss_cls``, ``loss_bbox`` (float32 scalars).
        """
        cls_out, reg_out = self(feats)
        device = cls_out[0].device
        anchors = torch.cat(self.anchor_generator([tuple(c.shape[-2:]) for c in cls_out], device))  # (A, 4)
        cls = torch.cat([flatten_level(c, self.num_classes) for c in cls_out], 1).float()  # (N, A, C)
        reg = torch.cat([flatten_level(r, 4) for r in reg_out], 1).float()  # (N, A, 4)
        if ignore is None:
            ignore = [torch.zeros(len(b), dtype=torch.bool, device=device) for b in boxes]
        t_labels, t_boxes, t_valid = [], [], []
        for b, l, ig in zip(boxes, labels, ignore):
            t = self.get_targets(anchors, b.to(device), l.to(device), ig.to(device).bool())
            t_labels.append(t[0]), t_boxes.append(t[1]), t_valid.append(t[2])
        t_labels, t_boxes, t_valid = torch.stack(t_labels), torch.stack(t_boxes), torch.stack(t_valid)
        n = t_labels.shape[0]
        pos = t_labels < self.num_classes  # (N, A)
        num_pos = global_normalizer(pos.sum(), 1.0)
        onehot = (t_labels[..., None] == torch.arange(self.num_classes, device=device)).to(cls.dtype)
        focal = sigmoid_focal_loss(cls, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction='none')
        loss_cls = (focal.sum(dim=2) * t_valid).sum() / num_pos
        a = anchors[None].expand(n, -1, -1)  # (N, A, 4)
        # non-positive anchors regress onto themselves: finite terms, masked out below (exact zero gradient)
        gt = torch.where(pos[..., None], t_boxes, a).reshape(-1, 4)
        a = a.reshape(-1, 4)
        if self.loss_bbox_type == 'giou':
            per = giou_loss(decode_boxes(reg.reshape(-1, 4), a), gt)
        else:
            per = F.smooth_l1_loss(reg.reshape(-1, 4), encode_boxes(gt, a), beta=self.beta,
                                   reduction='none').sum(dim=1)
        loss_bbox = (per.reshape(n, -1) * pos).sum() / num_pos
        return {'loss_cls': loss_cls * self.loss_weights['cls'], 'loss_bbox': loss_bbox * self.loss_weights['bbox']}

    @torch.no_grad()
    def predict(self, feats: Sequence[Tensor], metas: Sequence[dict[str, Any]]) -> list[dict[str, Tensor]]:
        """Detections per image in original-image pixels; only the top-k candidates per level are decoded."""
        cls_out, reg_out = self(feats)
        anchors = self.anchor_generator([tuple(c.shape[-2:]) for c in cls_out], cls_out[0].device)
        results = []
        for i, meta in enumerate(metas):
            scores = [flatten_level(c[i:i + 1], self.num_classes)[0].float().sigmoid() for c in cls_out]
            deltas = [flatten_level(r[i:i + 1], 4)[0] for r in reg_out]

            def decode(lvl: int, idx: Tensor, deltas=deltas) -> Tensor:
                return decode_boxes(deltas[lvl][idx], anchors[lvl][idx])

            results.append(postprocess(scores, None, meta, decode=decode, **self.test_cfg))
        return results
