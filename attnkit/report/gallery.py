"""Best and worst predictions of the val set: a per-image score, and a picture of each prediction.

Per-image score (higher is better), by task:

- **detection**: F1 at IoU >= 0.5 of the detections scoring >= ``score_thr`` (0.3, the drawing threshold) against
  the image's ground-truth boxes that are not ``ignore``: detections are matched greedily by descending score to
  the unmatched box of the same class with the highest IoU; F1 = 2 TP / (detections + boxes). An image with no
  box and no detection scores 1.
- **segmentation**: the image's mean IoU over the classes present in its ground truth or its prediction (pixels
  labelled ``ignore_index`` 255 are left out), the prediction resized (nearest) to the ground truth's size.
- **vqa**: the VQA soft accuracy of the top answer (the sample's ``answer_scores`` at the predicted answer:
  min(#annotators who gave it / 3, 1)).

The gallery scores ``num_images`` samples spread evenly over the val set (the same ones at every evaluation, so
reports compare across evaluations) and shows the ``show`` best and ``show`` worst of them.
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ['Scored', 'score_images', 'pick_best_worst', 'detection_f1', 'segmentation_miou', 'vqa_score',
           'task_of']

MIN_SIDE = 192  # pictures are enlarged (nearest) to at least this side so that captions stay readable


@dataclass
class Scored:
    """One scored val sample: ``index`` in the dataset, ``score`` (see the module docstring), the picture as PNG
    bytes, a caption, the image file and the question (VQA) for the attention gallery."""

    index: int
    score: float
    png: bytes
    caption: str
    file: str | None = None
    question: str | None = None


def task_of(cfg: Any, model: torch.nn.Module) -> str | None:
    """'detection' | 'segmentation' | 'vqa' from ``cfg.task``, else from the model's class; None for others."""
    task = cfg.get('task') if hasattr(cfg, 'get') else None
    if task in ('detection', 'segmentation', 'vqa'):
        return task
    return {'Detector': 'detection', 'Segmentor': 'segmentation', 'VQAModel': 'vqa'}.get(type(model).__name__)


# ----------------------------------------------------------------------------------------------- scores
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, 4) x (M, 4) xyxy boxes -> (K, M) IoU."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


def detection_f1(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray,
                 gt_labels: np.ndarray, score_thr: float = 0.3, iou_thr: float = 0.5) -> float:
    """F1 at ``iou_thr`` of the detections scoring >= ``score_thr`` (greedy class-aware matching by score).

    Args:
        boxes: (K, 4) xyxy detections; scores, labels: (K,).
        gt_boxes: (M, 4) xyxy ground truth in the same pixels; gt_labels: (M,).
    """
    keep = np.asarray(scores) >= score_thr
    boxes, labels = np.asarray(boxes).reshape(-1, 4)[keep], np.asarray(labels)[keep]
    order = np.argsort(-np.asarray(scores)[keep], kind='stable')
    gt_boxes, gt_labels = np.asarray(gt_boxes).reshape(-1, 4), np.asarray(gt_labels)
    if len(boxes) == 0 and len(gt_boxes) == 0:
        return 1.0
    iou = box_iou(boxes, gt_boxes)
    used = np.zeros(len(gt_boxes), bool)
    tp = 0
    for k in order:
        candidates = np.where((gt_labels == labels[k]) & ~used & (iou[k] >= iou_thr))[0]
        if len(candidates):
            used[candidates[np.argmax(iou[k, candidates])]] = True
            tp += 1
    return 2.0 * tp / (len(boxes) + len(gt_boxes))


def segmentation_miou(pred: np.ndarray, gt: np.ndarray, ignore_index: int = 255) -> float:
    """Mean IoU over the classes present in ``gt`` or ``pred`` ((H, W) class indices), ``ignore_index`` left out."""
    valid = gt != ignore_index
    p, g = pred[valid], gt[valid]
    classes = np.union1d(np.unique(p), np.unique(g))
    if len(classes) == 0:
        return 1.0
    ious = [np.logical_and(p == c, g == c).sum() / max(np.logical_or(p == c, g == c).sum(), 1) for c in classes]
    return float(np.mean(ious))


def vqa_score(answer_scores: torch.Tensor | np.ndarray, answer_id: int) -> float:
    """The soft VQA accuracy of answer ``answer_id``: the sample's ``answer_scores`` (A,) at that answer."""
    scores = np.asarray(answer_scores, np.float64).reshape(-1)
    return float(scores[answer_id]) if 0 <= answer_id < len(scores) else 0.0


# ---------------------------------------------------------------------------------------------- pictures
def _image(sample: dict[str, Any]) -> np.ndarray:
    """The sample's (H, W, 3) uint8 image, cropped to ``img_size``."""
    img = sample['image']
    h, w = sample['meta'].get('img_size', img.shape[-2:])
    return np.ascontiguousarray(img[:, :h, :w].permute(1, 2, 0).cpu().numpy().astype(np.uint8))


def _enlarge(image: np.ndarray) -> tuple[np.ndarray, int]:
    factor = max(1, -(-MIN_SIDE // max(1, min(image.shape[:2]))))
    if factor == 1:
        return image, 1
    return np.repeat(np.repeat(image, factor, 0), factor, 1), factor


def _png(image: Any) -> bytes:
    from PIL import Image
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()


def _detection(sample: dict[str, Any], pred: dict[str, Any], model: Any, score_thr: float) -> tuple[float, bytes, str]:
    from PIL import ImageDraw
    from ..tasks.detection.visualize import draw_detections
    sx, sy = sample['meta'].get('scale_factor', (1.0, 1.0))
    boxes = pred['boxes'].float().cpu().numpy().reshape(-1, 4) * np.array([sx, sy, sx, sy])  # into sample pixels
    scores, labels = pred['scores'].float().cpu().numpy(), pred['labels'].cpu().numpy()
    gt = sample['boxes'].float().numpy().reshape(-1, 4)
    gt_labels = sample['labels'].numpy()
    ignore = sample.get('ignore')
    if ignore is not None:
        keep = ~ignore.numpy().astype(bool)
        gt, gt_labels = gt[keep], gt_labels[keep]
    score = detection_f1(boxes, scores, labels, gt, gt_labels, score_thr)
    image, f = _enlarge(_image(sample))
    classes = list((getattr(model, 'metainfo', None) or {}).get('classes') or [])
    picture = draw_detections(image, boxes * f, labels, scores, classes, score_thr=score_thr)
    draw = ImageDraw.Draw(picture)
    for box in gt * f:  # ground truth: thin white dashes would need more code; a 1-px white outline
        draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    shown = int((scores >= score_thr).sum())
    caption = (f'F1@0.5 = {score:.2f} · {len(gt)} object(s), {shown} detection(s) ≥ {score_thr:g} '
               '(white: ground truth)')
    return score, _png(picture), caption


def _segmentation(sample: dict[str, Any], pred: dict[str, Any], model: Any) -> tuple[float, bytes, str]:
    import cv2
    from ..data.palette import voc_palette
    from ..tasks.segmentation.visualize import blend_mask, colorize
    h, w = sample['meta'].get('img_size', sample['mask'].shape[-2:])
    gt = sample['mask'][:h, :w].numpy()
    sem = pred['sem_seg'].cpu().numpy().astype(np.int32)
    sem = cv2.resize(sem.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    meta = getattr(model, 'metainfo', None) or {}
    score = segmentation_miou(sem, gt, int(meta.get('ignore_index', 255)))
    palette = meta.get('palette') or voc_palette(len(meta.get('classes') or []) or 256)
    image, f = _enlarge(_image(sample))
    big = lambda a: np.repeat(np.repeat(a, f, 0), f, 1)  # noqa: E731
    left = blend_mask(image, big(sem), palette, 0.5)
    right = colorize(big(gt), palette)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    caption = f'image mIoU = {score:.2f} · left: prediction over the image, right: ground truth'
    return score, _png(np.concatenate([left, gap, right], 1)), caption


def _vqa(sample: dict[str, Any], pred: dict[str, Any], model: Any) -> tuple[float, bytes, str]:
    from ..tasks.vqa.visualize import overlay_attention
    answers = list(getattr(model, 'answers', None) or (model.metainfo or {}).get('answers') or [])
    ids, scores = pred['answer_ids'].tolist(), pred['scores'].tolist()
    score = vqa_score(sample['answer_scores'], int(ids[0]))
    gt = sample['answer_scores']
    best_gt = answers[int(gt.argmax())] if len(answers) > int(gt.argmax()) and float(gt.max()) > 0 else '?'
    lines = [f"Q: {sample.get('question', '')}"] + [
        f'{rank}. {answers[i] if i < len(answers) else i} ({s:.2f})' for rank, (i, s) in enumerate(zip(ids[:3], scores[:3]), 1)]
    att = pred.get('attention')
    image, _ = _enlarge(_image(sample))
    with tempfile.TemporaryDirectory() as tmp:
        path = overlay_attention(image, att.cpu() if att is not None else None, os.path.join(tmp, 'vqa.png'), lines)
        with open(path, 'rb') as f:
            png = f.read()
    return score, png, f'VQA accuracy = {score:.2f} · most common true answer: {best_gt}'


# ---------------------------------------------------------------------------------------------- running
def spread_indices(length: int, num: int) -> list[int]:
    """``num`` dataset indices spread evenly from the first to the last sample (all of them when ``num >= length``):
    VQA sets hold many questions per image in a row, so the first N samples would show one or two images."""
    num = min(int(num), int(length))
    if num <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, length - 1, num)})


@torch.no_grad()
def score_images(model: torch.nn.Module, dataset: Any, task: str, num_images: int = 16,
                 score_thr: float = 0.3, progress: Callable[[int], None] | None = None) -> list[Scored]:
    """Run ``model`` (eval mode, restored afterwards) on ``num_images`` samples spread over ``dataset``
    (:func:`spread_indices`), one at a time; return each one's score and picture (see the module docstring)."""
    from ..data.collate import collate as default_collate
    from ..engine.utils import to_device
    device = next(model.parameters()).device
    collate = getattr(dataset, 'collate', None) or default_collate
    draw = {'detection': lambda s, p: _detection(s, p, model, score_thr),
            'segmentation': lambda s, p: _segmentation(s, p, model),
            'vqa': lambda s, p: _vqa(s, p, model)}[task]
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in spread_indices(len(dataset), num_images):
            sample = dataset[i]
            pred = model(to_device(collate([sample]), device))[0]
            score, png, caption = draw(sample, pred)
            meta = sample.get('meta') or {}
            out.append(Scored(i, float(score), png, f"#{i} ({meta.get('id', i)}) · {caption}", meta.get('file'),
                              sample.get('question')))
            if progress is not None:
                progress(i)
    finally:
        model.train(was_training)
    return out


def pick_best_worst(scored: Sequence[Scored], show: int) -> tuple[list[Scored], list[Scored]]:
    """The ``show`` highest and ``show`` lowest scored (ties: dataset order); an image is not in both lists."""
    ranked = sorted(scored, key=lambda s: (-s.score, s.index))
    best = ranked[:show]
    rest = [s for s in ranked if s not in best]
    worst = sorted(rest, key=lambda s: (s.score, s.index))[:show]
    return best, worst
