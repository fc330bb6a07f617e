"""Shared by the COCO and VOC metrics: one record per image from a batch and its predictions, and ground
truth read from a detection dataset."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ['detection_records', 'dataset_ground_truth']


def detection_records(batch: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Picklable per-image records ``{'img_id', 'boxes' (K, 4), 'scores' (K,), 'labels' (K,)}`` (numpy)."""
    out = []
    for meta, pred in zip(batch['metas'], predictions):
        out.append({'img_id': meta['id'],
                    'boxes': pred['boxes'].detach().float().cpu().numpy().reshape(-1, 4),
                    'scores': pred['scores'].detach().float().cpu().numpy().reshape(-1),
                    'labels': pred['labels'].detach().cpu().numpy().astype(np.int64).reshape(-1)})
    return out


def dataset_ground_truth(dataset: Any) -> dict[Any, dict[str, Any]]:
    """Image id → ``{'boxes' (K, 4) original pixels, 'labels', 'ignore', 'width', 'height'}`` for every image of
    a detection dataset (``get_ann_info(i)``; no image is read)."""
    if dataset is None or not hasattr(dataset, 'get_ann_info'):
        raise ValueError("Detection metrics need the evaluated dataset (with get_ann_info) for the ground truth.")
    gts = {}
    for i in range(len(dataset)):
        info = dataset.get_ann_info(i)
        gts[info['id']] = info
    return gts
