"""The per-class table of an evaluation, from the evaluator (detection AP) or from dotted metric names (IoU.<class>)."""
from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ['per_class_table', 'per_class_from_metrics']


def per_class_from_metrics(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{'title', 'columns', 'rows'}`` from metrics named ``<metric>.<class>`` (e.g. ``IoU.circle``), or None.

    Each metric prefix becomes a column, each class a row (in first-seen order).
    """
    columns: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if '.' not in key:
            continue
        metric, name = key.split('.', 1)
        if metric not in columns:
            columns.append(metric)
        rows.setdefault(name, {})[metric] = value
    if not rows:
        return None
    return {'title': 'Per class (last evaluation)', 'columns': ['class', *columns],
            'rows': [[name, *(values.get(c) for c in columns)] for name, values in rows.items()]}


def per_class_table(evaluator: Any, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The per-class table of the evaluation that just ran.

    COCO (``per_class_ap()``): AP@[.5:.95] and AP50 per class; VOC (its per-class records): objects,
    detections, AP; otherwise the dotted metric names (mIoU's ``IoU.<class>``); None when there is none.
    """
    per_class_ap = getattr(evaluator, 'per_class_ap', None)
    if callable(per_class_ap):
        try:
            table = per_class_ap()
        except Exception:  # noqa: BLE001 - a table is optional; the report stays
            table = {}
        if table:
            return {'title': 'Per class AP (last evaluation)', 'columns': ['class', 'AP', 'AP50'],
                    'rows': [[name, _plain(ap), _plain(ap50)] for name, (ap, ap50) in table.items()]}
    voc = getattr(evaluator, '_per_class', None)
    if voc:
        return {'title': 'Per class AP (last evaluation)', 'columns': ['class', 'objects', 'detections', 'AP'],
                'rows': [[name, int(npos), int(ndet), _plain(ap)] for name, npos, ndet, ap in voc]}
    return per_class_from_metrics(metrics)


def _plain(value: Any) -> Any:
    value = float(value)
    return value if math.isfinite(value) else str(value)
