"""Export wrappers: each task model as a module of plain tensors (no batch dicts, no metas, no Python branches on
data), the graph that ``attnkit export`` writes.

Every wrapper takes ``images`` (N, 3, H, W) **uint8** (0..255, RGB) and normalises them inside the graph with
the model's own mean and std, as the task model does (:mod:`attnkit.data.normalize`):

* :class:`DetectorExport` — ``images -> boxes (K, 4) xyxy in input pixels, scores (K,), labels (K,) int64,
  batch_index (K,) int64`` after score threshold, per-level top-k, box decoding and class-wise NMS
  (``torchvision.ops.batched_nms``'s coordinate trick, ONNX NonMaxSuppression), at most ``max_per_img`` per
  image, sorted by score (per image). The same detections as ``Detector.forward`` in eval mode with ``img_size = ori_size = (H, W)``.
* :class:`SegmentorExport` — ``images -> logits (N, K, H, W)`` float32 at the input size (the scores
  ``Segmentor.predict_logits`` computes: plain logits, or mean softmax with flip / multi-scale test).
* :class:`VQAExport` — ``images, input_ids (N, L) int64, attention_mask (N, L) int64 -> scores (N, A)`` sigmoid
  answer scores (one image per question).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from ..errors import ConfigError

__all__ = ['DetectorExport', 'SegmentorExport', 'VQAExport', 'wrap_for_export', 'task_of', 'model_stride',
           'OUTPUT_NAMES', 'INPUT_NAMES']

INPUT_NAMES = {'detection': ['images'], 'segmentation': ['images'],
               'vqa': ['images', 'input_ids', 'attention_mask']}
OUTPUT_NAMES = {'detection': ['boxes', 'scores', 'labels', 'batch_index'], 'segmentation': ['logits'],
                'vqa': ['scores']}


def task_of(model: nn.Module) -> str:
    """``'detection'``, ``'segmentation'`` or ``'vqa'`` for a built attnkit task model."""
    from ..tasks.detection.model import Detector
    from ..tasks.segmentation.model import Segmentor
    from ..tasks.vqa.model import VQAModel
    for cls, task in ((Detector, 'detection'), (Segmentor, 'segmentation'), (VQAModel, 'vqa')):
        if isinstance(model, cls):
            return task
    raise ConfigError(f'attnkit export takes a Detector, Segmentor or VQAModel, got {type(model).__name__}.')


def model_stride(model: nn.Module) -> int:
    """The side every input size must be a multiple of: the output stride of the backbone (the largest of
    ``backbone.strides``). For a detector that is the largest FPN stride the top-down path merges (C5's 32 for
    FCOS/RetinaNet; the extra P6/P7 levels are strided convolutions that take any size, as the eager model's
    collate, which pads to 32, relies on); for a segmentor its output stride (8 for a D8 model)."""
    task_of(model)
    strides = getattr(getattr(model, 'backbone', None), 'strides', None)
    return int(max(strides)) if strides else 1


class DetectorExport(nn.Module):
    """A :class:`~attnkit.tasks.detection.Detector` with box decoding and NMS in the graph.

    ``forward(images (N, 3, H, W) uint8) -> (boxes (K, 4) float32, scores (K,), labels (K,) int64,
    batch_index (K,) int64)``: detections of all images, sorted by decreasing score; ``batch_index`` says which
    image each belongs to. Boxes are in input pixels, clipped to (W, H).

    Candidate selection is written without host-side branches so it traces with symbolic shapes: per level the
    class scores are padded with -1 to at least ``nms_pre`` entries and the top ``nms_pre`` kept; those above
    ``score_thr`` are the same set as the eager model's "above threshold, then top ``nms_pre``".
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from ..heads.detection.fcos import FCOSHead
        from ..heads.detection.retinanet import RetinaHead
        if not isinstance(model.head, (FCOSHead, RetinaHead)):
            raise ConfigError(f'attnkit export decodes FCOSHead and RetinaHead outputs; this detector has '
                              f'{type(model.head).__name__}.')
        self.model = model
        cfg = model.head.test_cfg
        self.score_thr, self.nms_pre = float(cfg['score_thr']), int(cfg['nms_pre'])
        self.iou_thr, self.max_per_img = float(cfg['iou_thr']), int(cfg['max_per_img'])

    def level_outputs(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class scores (N, P_l, C) in [0, 1] and decoded boxes (N, P_l, 4) xyxy in input pixels."""
        from ..heads.detection.anchors import decode_boxes
        from ..heads.detection.fcos import FCOSHead, level_points
        from ..heads.detection.utils import flatten_level
        head = self.model.head
        c = head.num_classes
        scores, boxes = [], []
        if isinstance(head, FCOSHead):
            cls_out, reg_out, ctr_out = head(feats)
            pts = level_points([tuple(x.shape[-2:]) for x in cls_out], head.strides, cls_out[0].device)
            for cls, reg, ctr, p in zip(cls_out, reg_out, ctr_out, pts):
                scores.append((flatten_level(cls, c).float().sigmoid() *
                               flatten_level(ctr, 1).float().sigmoid()).sqrt())
                d = flatten_level(reg, 4).float()
                boxes.append(torch.cat([p - d[..., :2], p + d[..., 2:]], dim=2))
            return scores, boxes
        cls_out, reg_out = head(feats)
        anchors = head.anchor_generator([tuple(x.shape[-2:]) for x in cls_out], cls_out[0].device)
        for cls, reg, a in zip(cls_out, reg_out, anchors):
            n = cls.shape[0]
            scores.append(flatten_level(cls, c).float().sigmoid())
            deltas = flatten_level(reg, 4).reshape(-1, 4)
            boxes.append(decode_boxes(deltas, a.repeat(n, 1)).reshape(n, -1, 4))
        return scores, boxes

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        n, _, height, width = images.shape
        scores, boxes = self.level_outputs(model.extract_feats(model.normalizer(images)))
        c = model.head.num_classes
        all_scores, all_boxes, all_labels = [], [], []
        for s, b in zip(scores, boxes):
            flat = s.reshape(n, -1)  # (N, P_l * C), index = position * C + class
            flat = torch.cat([flat, flat.new_full((n, self.nms_pre), -1.0)], dim=1)
            top, idx = flat.topk(self.nms_pre, dim=1)  # (N, k)
            pos = (idx // c).clamp(max=b.shape[1] - 1)  # padded slots point anywhere: their score -1 drops them
            all_scores.append(top)
            all_labels.append(idx % c)
            all_boxes.append(b.gather(1, pos[..., None].expand(-1, -1, 4)))
        score = torch.cat(all_scores, 1).reshape(-1)  # (N * L * k,)
        label = torch.cat(all_labels, 1).reshape(-1)
        box = torch.cat(all_boxes, 1).reshape(-1, 4)
        image = torch.arange(n, device=images.device)[:, None].expand(-1, score.shape[0] // n).reshape(-1)
        box = torch.stack([box[:, 0].clamp(0, width), box[:, 1].clamp(0, height), box[:, 2].clamp(0, width),
                           box[:, 3].clamp(0, height)], dim=1)  # as postprocess clips to img_size
        keep = (score > self.score_thr) & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
        box, score, label, image = box[keep], score[keep], label[keep], image[keep]
        # torchvision's batched_nms (coordinate trick) with a shape-derived offset: every box lies in
        # [0, W] x [0, H], so shifting class group g by g * (W + H + 1) keeps groups apart without boxes.max(),
        # whose empty-input branch cannot be traced
        group = (image * c + label).to(box.dtype) * (width + height + 1)
        order = nms(box + group[:, None], score, self.iou_thr)  # sorted by decreasing score
        box, score, label, image = box[order], score[order], label[order], image[order]
        # at most max_per_img per image: a detection's rank among the earlier ones of its image
        onehot = (image[:, None] == torch.arange(n, device=image.device)[None]).to(torch.int64)  # (K, N)
        rank = (onehot.cumsum(0) * onehot).sum(1) - 1
        top = rank < self.max_per_img
        return box[top], score[top], label[top], image[top]


class SegmentorExport(nn.Module):
    """A :class:`~attnkit.tasks.segmentation.Segmentor`: ``images (N, 3, H, W) uint8 -> logits (N, K, H, W)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        model = self.model
        x = model.normalizer(images)
        variants = [(s, f) for s in model.tta_scales for f in ((False, True) if model.tta_flip else (False,))]
        if variants == [(1.0, False)]:
            return model._logits(x)
        return model.predict_logits.__wrapped__(model, x)  # the TTA average, without the no_grad wrapper


class VQAExport(nn.Module):
    """A :class:`~attnkit.tasks.vqa.VQAModel`: ``images (N, 3, H, W) uint8, input_ids (N, L) int64,
    attention_mask (N, L) int64 (1 = word) -> scores (N, A)`` sigmoid answer scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model.forward_logits({'images': images, 'input_ids': input_ids,
                                         'attention_mask': attention_mask})
        return out['logits'].sigmoid()


def wrap_for_export(model: nn.Module, task: str | None = None) -> nn.Module:
    """The export wrapper of ``model`` (eval mode) for ``task`` (default: from the model's class)."""
    task = task or task_of(model)
    wrappers: dict[str, Any] = {'detection': DetectorExport, 'segmentation': SegmentorExport, 'vqa': VQAExport}
    if task not in wrappers:
        from ..registry import closest_names
        close = closest_names(task, wrappers)
        raise ConfigError(f'Unknown export task {task!r}'
                          + (f"; did you mean {', '.join(map(repr, close))}?" if close else '')
                          + f" (tasks: {', '.join(wrappers)}).")
    return wrappers[task](model.eval()).eval()
