"""Classification metrics: top-k accuracy (single-label) and mAP (multi-label).

* :class:`Accuracy`: ``top{k}`` = fraction of images whose true class is among the k highest scores. The rank of
  the true class counts the classes scored strictly higher, plus the equal-scored ones of lower index (the order
  ``argmax`` breaks ties in), so a tie is not counted as a hit for free. Keys for ``k >= K`` are left out (always 1).
* :class:`MultiLabelMAP`: per class, the average precision of ranking the images by that class's score (the
  non-interpolated AP of scikit-learn's ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over distinct
  score thresholds); ``mAP`` averages it over the classes that have at least one positive image. Entries marked
  ignored (target -1: e.g. VOC "difficult") are left out of that class's AP.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import METRICS
from .base import BaseEvaluator

__all__ = ['Accuracy', 'MultiLabelMAP', 'average_precision', 'true_class_rank', 'true_class_ranks']


def true_class_rank(scores: torch.Tensor, label: int) -> int:
    """0-based rank of class ``label`` in (K,) ``scores``: higher scores, plus equal scores of lower index."""
    s = scores[label]
    return int((scores > s).sum()) + int((scores[:label] == s).sum())


def true_class_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`true_class_rank` of each row: (N, K) ``scores``, (N,) ``labels`` -> (N,) int64 ranks."""
    s = scores.gather(1, labels[:, None])
    lower = torch.arange(scores.shape[1])[None, :] < labels[:, None]
    return (scores > s).sum(1) + ((scores == s) & lower).sum(1)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of (M,) ``scores`` against (M,) binary ``targets`` (NaN without positives).

    Images of equal score form one threshold (as scikit-learn's ``average_precision_score``).
    """
    scores = np.asarray(scores, np.float64)
    targets = np.asarray(targets) > 0
    if not targets.any():
        return float('nan')
    order = np.argsort(-scores, kind='mergesort')
    s, y = scores[order], targets[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last image of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _check_dataset(dataset: Any, multi: bool, name: str, other: str) -> None:
    flag = getattr(dataset, 'multi_label', None)
    if flag is not None and bool(flag) != multi:
        kind = 'multi' if flag else 'single'
        raise ConfigError(f'{name} is for {"multi" if multi else "single"}-label data but the dataset is '
                          f'{kind}-label; use evaluator=dict(type={other!r}).')


@METRICS.register_module('Accuracy')
class Accuracy(BaseEvaluator):
    """Top-k accuracy of single-label classification (first key ``top1``: the primary metric).

    Args:
        dataset: the evaluated dataset (class names for :meth:`summary`).
        topk: the k's to report (k >= K is left out).

    Records: one ``{'label': int, 'rank': int}`` per image. Metrics: ``top{k}`` for each k < K (``top1`` always),
    and ``mean_class_acc`` (top-1 per class, averaged over the classes that have images).
    """

    def __init__(self, dataset: Any = None, topk: Sequence[int] = (1, 5)) -> None:
        super().__init__(dataset)
        _check_dataset(dataset, False, 'Accuracy', 'MultiLabelMAP')
        ks = sorted({int(k) for k in ((topk,) if isinstance(topk, int) else topk)} | {1})
        if ks[0] < 1:
            raise ConfigError(f'Accuracy topk must be positive integers, got {topk!r}.')
        self.topk = ks

    def process(self, batch: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        if not predictions:
            return
        labels = batch['labels'][:len(predictions)].long().cpu()
        scores = torch.stack([p['scores'] for p in predictions]).float().cpu()  # one copy per batch
        ranks = true_class_ranks(scores, labels)
        self.results += [{'label': int(g), 'rank': int(r)} for g, r in zip(labels.tolist(), ranks.tolist())]

    def compute(self) -> dict[str, float]:
        if not self.results:
            return {}
        ranks = np.array([r['rank'] for r in self.results])
        labels = np.array([r['label'] for r in self.results])
        num_classes = len(getattr(self.dataset, 'classes', None) or []) or int(labels.max()) + 1
        out = {f'top{k}': float((ranks < k).mean()) for k in self.topk if k == 1 or k < num_classes}
        per_class = [float((ranks[labels == c] < 1).mean()) for c in np.unique(labels)]
        out['mean_class_acc'] = float(np.mean(per_class))
        return out

    def summary(self) -> str:
        """Per class: images and top-1 accuracy (%)."""
        if not self.results:
            return ''
        classes = list(getattr(self.dataset, 'classes', None) or [])
        ranks = np.array([r['rank'] for r in self.results])
        labels = np.array([r['label'] for r in self.results])
        lines = [f"{'class':<20} {'images':>7} {'top-1 %':>8}"]
        for c in np.unique(labels):
            name = classes[c] if c < len(classes) else str(c)
            hit = ranks[labels == c] < 1
            lines.append(f'{name[:20]:<20} {hit.size:>7} {100 * hit.mean():>8.2f}')
        return '\n'.join(lines)


@METRICS.register_module('MultiLabelMAP')
class MultiLabelMAP(BaseEvaluator):
    """Mean average precision of multi-label classification (first key ``mAP``).

    Args:
        dataset: the evaluated dataset (class names for :meth:`summary`).

    Records: one ``{'scores': (K,) float32, 'target': (K,) int8 of 1 / 0 / -1}`` per image. Metrics: ``mAP``
    over the classes with positives, and ``num_classes`` (how many such classes).
    """

    def __init__(self, dataset: Any = None) -> None:
        super().__init__(dataset)
        _check_dataset(dataset, True, 'MultiLabelMAP', 'Accuracy')

    def process(self, batch: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
        if not predictions:
            return
        scores = torch.stack([p['scores'] for p in predictions]).float().cpu().numpy()  # one copy per batch
        targets = batch['labels'][:len(predictions)].cpu().numpy().astype(np.int8)
        self.results += [{'scores': s, 'target': t} for s, t in zip(scores, targets)]

    def per_class_ap(self) -> np.ndarray:
        """(K,) AP per class (NaN for a class without positive images)."""
        scores = np.stack([r['scores'] for r in self.results])
        targets = np.stack([r['target'] for r in self.results])
        aps = []
        for c in range(scores.shape[1]):
            keep = targets[:, c] >= 0
            aps.append(average_precision(scores[keep, c], targets[keep, c]))
        return np.array(aps)

    def compute(self) -> dict[str, float]:
        if not self.results:
            return {}
        aps = self.per_class_ap()
        have = ~np.isnan(aps)
        return {'mAP': float(aps[have].mean()) if have.any() else 0.0, 'num_classes': float(have.sum())}

    def summary(self) -> str:
        """Per class: positive images and AP (%)."""
        if not self.results:
            return ''
        classes = list(getattr(self.dataset, 'classes', None) or [])
        aps = self.per_class_ap()
        positives = (np.stack([r['target'] for r in self.results]) == 1).sum(0)
        lines = [f"{'class':<20} {'positives':>9} {'AP %':>7}"]
        for c, ap in enumerate(aps):
            name = classes[c] if c < len(classes) else str(c)
            lines.append(f"{name[:20]:<20} {int(positives[c]):>9} {'-' if np.isnan(ap) else f'{100 * ap:.2f}':>7}")
        return '\n'.join(lines)
