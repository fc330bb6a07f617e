"""Semantic segmentation metrics: mIoU, mAcc, aAcc from a confusion matrix accumulated over the dataset.

Each process sums the K×K int64 confusion matrices of its images (rows = ground truth, columns = prediction,
ignore pixels left out) into one matrix; the engine sums that matrix across processes (``sum_state``). The
state is O(K²) per process whatever the number of images (ADE20K, K = 150: 176 KB), where one matrix per image
gathered to every process would be 2000 × 176 KB = 360 MB.

    IoU_k = TP_k / (TP_k + FP_k + FN_k)     Acc_k = TP_k / (TP_k + FN_k)     aAcc = sum TP / labelled pixels

A class absent from both ground truth and predictions over the whole dataset has IoU NaN and is left out of
mIoU; a class absent from the ground truth has Acc NaN and is left out of mAcc.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from ..registry import METRICS
from .base import BaseEvaluator

__all__ = ['IoUMetric', 'confusion_matrix', 'confusion_matrix_tensor', 'iou_from_confusion']


def confusion_matrix(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """The (K, K) int64 confusion matrix ``cm[gt, pred]`` of one label map.

    Args:
        pred: (H, W) predicted class indices in ``0..K-1``.
        gt: (H, W) ground truth; ``ignore_index`` pixels are left out.
        num_classes: K.

    Raises:
        DataError: shapes differ, or ground truth values outside ``0..K-1`` other than ``ignore_index``.
    """
    return confusion_matrix_tensor(pred, gt, num_classes, ignore_index).numpy()


def confusion_matrix_tensor(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, num_classes: int,
                            ignore_index: int = 255) -> torch.Tensor:
    """:func:`confusion_matrix` as a (K, K) int64 **CPU** tensor, counted on ``pred``'s device.

    ``gt`` is moved to ``pred``'s device first (a CUDA prediction against a CPU label map, or the reverse,
    is fine); only the K×K counts come back to the CPU.
    """
    pred = torch.as_tensor(pred).reshape(-1).long()
    gt = torch.as_tensor(np.asarray(gt) if not isinstance(gt, torch.Tensor) else gt)
    gt = gt.to(pred.device).reshape(-1).long()  # moved in its own dtype (uint8 maps: 1 byte a pixel), then widened
    if pred.numel() != gt.numel():
        raise DataError(f"Prediction has {pred.numel()} pixels but the ground truth has {gt.numel()}.")
    keep = gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    if gt.numel() and (gt.min() < 0 or gt.max() >= num_classes):
        bad = sorted(set(gt[(gt < 0) | (gt >= num_classes)].unique().tolist()))[:10]
        raise DataError(f"Ground truth has label values {bad} outside 0..{num_classes - 1} (ignore index "
                        f"{ignore_index}).")
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise DataError(f"Prediction has class indices outside 0..{num_classes - 1}.")
    counts = torch.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to('cpu', torch.int64)


def iou_from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Per-class IoU / Acc arrays (NaN where undefined) and aAcc from a confusion matrix ``cm[gt, pred]``."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    gt_count = cm.sum(axis=1)
    pred_count = cm.sum(axis=0)
    union = gt_count + pred_count - tp
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_count > 0, tp / gt_count, np.nan)
    total = cm.sum()
    return {'iou': iou, 'acc': acc, 'aAcc': float(tp.sum() / total) if total > 0 else float('nan')}


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float('nan')


@METRICS.register_module()
class IoUMetric(BaseEvaluator):
    """mIoU (primary), mAcc and aAcc over a dataset.

    Args:
        dataset: the evaluated dataset; gives ``metainfo['classes']`` and, through ``gt_mask(meta)``, each
            image's label map at original size. Without ``gt_mask`` the batch's ``masks`` are used (cropped to
            ``meta['img_size']`` and resized nearest to the prediction's size).
        num_classes, class_names: override the dataset's classes.
        ignore_index: ground-truth value left out.
    """

    def __init__(self, dataset: Any = None, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, ignore_index: int = 255) -> None:
        super().__init__(dataset)
        meta = getattr(dataset, 'metainfo', None) or {}
        names = list(class_names) if class_names else list(meta.get('classes', []))
        if num_classes is None:
            if not names:
                raise ValueError("IoUMetric needs num_classes, class_names or a dataset with metainfo['classes'].")
            num_classes = len(names)
        self.num_classes = int(num_classes)
        self.class_names = names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]
        self.ignore_index = ignore_index
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._images = 0

    def reset(self) -> None:
        """Zero the confusion matrix and the image count."""
        super().reset()
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        self._images = 0

    def sum_state(self) -> dict[str, torch.Tensor]:
        """``confusion`` (K, K) int64 and ``images`` (1,) int64: summed across processes by the engine."""
        return {'confusion': self._confusion.clone(), 'images': torch.tensor([self._images], dtype=torch.int64)}

    def load_sum_state(self, state: dict[str, torch.Tensor]) -> None:
        self._confusion = state['confusion'].to('cpu', torch.int64)
        self._images = int(state['images'].sum())

    def num_samples(self) -> int:
        """Images counted in the confusion matrix (plus any matrices put in ``results`` by hand)."""
        return self._images + len(self.results)

    def _gt(self, batch: dict[str, Any], i: int, pred_shape: tuple[int, int]) -> np.ndarray | torch.Tensor:
        meta = batch['metas'][i]
        if self.dataset is not None and hasattr(self.dataset, 'gt_mask'):
            return self.dataset.gt_mask(meta)
        mask = batch['masks'][i]
        h, w = meta.get('img_size', mask.shape[-2:])
        mask = mask[:h, :w]
        if tuple(mask.shape) != tuple(pred_shape):
            mask = F.interpolate(mask[None, None].float(), size=pred_shape, mode='nearest')[0, 0].long()
        return mask

    def process(self, batch: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        """Add each image's (K, K) confusion matrix to this process's running sum (``self.results`` stays empty).

        Counting runs on the prediction's device (the label map is moved there); the sum lives on the CPU.

        Args:
            batch: the collated batch (``metas``; ``masks`` when the dataset has no ``gt_mask``).
            predictions: per image ``{'sem_seg': (H0, W0) long}``.
        """
        for i, pred in enumerate(predictions):
            sem_seg = pred['sem_seg'].detach()
            gt = self._gt(batch, i, tuple(sem_seg.shape))
            if tuple(np.shape(gt)) != tuple(sem_seg.shape):
                meta = batch['metas'][i]
                raise DataError(f"Prediction for {meta.get('file', i)!r} is {tuple(sem_seg.shape)} but its label "
                                f"map {meta.get('seg_file', '')!r} is {tuple(np.shape(gt))}.")
            self._confusion += confusion_matrix_tensor(sem_seg, gt, self.num_classes, self.ignore_index)
            self._images += 1

    def _total(self) -> np.ndarray:
        """The summed confusion matrix; (K, K) matrices placed in ``self.results`` by hand are added too."""
        total = self._confusion.numpy().copy()
        for cm in self.results:
            total += cm
        return total

    def compute(self) -> dict[str, float]:
        """``{'mIoU', 'mAcc', 'aAcc'}`` as fractions in 0..1, plus ``IoU.<class>`` for each class."""
        stats = iou_from_confusion(self._total())
        out = {'mIoU': _nanmean(stats['iou']), 'mAcc': _nanmean(stats['acc']), 'aAcc': stats['aAcc']}
        for name, value in zip(self.class_names, stats['iou']):
            out[f'IoU.{name}'] = float(value)
        return out

    def summary(self) -> str:
        """Per-class IoU / Acc table (percent; ``nan`` = class absent from ground truth and predictions)."""
        stats = iou_from_confusion(self._total())
        width = max([5] + [len(n) for n in self.class_names])
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", '-' * (width + 16)]
        for name, iou, acc in zip(self.class_names, stats['iou'], stats['acc']):
            lines.append(f"{name:<{width}}  {iou * 100:6.2f}  {acc * 100:6.2f}")
        lines.append('-' * (width + 16))
        lines.append(f"{'mean':<{width}}  {_nanmean(stats['iou']) * 100:6.2f}  {_nanmean(stats['acc']) * 100:6.2f}"
                     f"   aAcc {stats['aAcc'] * 100:.2f}")
        return '\n'.join(lines)
