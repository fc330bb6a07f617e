"""``ClassificationList``: images and their labels listed in a CSV or JSON file."""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ....data.checks import check_files_exist, resolve_inside
from ....errors import DataError
from ....registry import DATASETS, closest_names
from .base import ClassificationDataset

__all__ = ['ClassificationList', 'read_label_list']

_HEADERS = {('file', 'label'), ('file', 'labels'), ('filename', 'label'), ('image', 'label'), ('path', 'label')}


def _split_labels(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).split(';') if v.strip()]


def read_label_list(path: str) -> tuple[list[tuple[str, list[str], str]], list[str] | None]:
    """The rows of a CSV or JSON label list: ``([(file, [label, ...], where), ...], classes or None)``.

    CSV: one ``file,label`` row per image (``file,label1;label2`` for several labels; an optional header row
    ``file,label``). JSON: a list of ``{"file": ..., "label": "cat"}`` (or ``"labels": ["cat", "dog"]``), or an
    object ``{"classes": [...], "samples": [that list]}``. ``where`` names the row for errors.

    Raises:
        DataError: unreadable file, a row without a file or a label, a JSON of another shape.
    """
    if not os.path.isfile(path):
        raise DataError(f'Classification list {path!r} does not exist.')
    rows: list[tuple[str, list[str], str]] = []
    classes = None
    if path.lower().endswith('.json'):
        try:
            with open(path, encoding='utf-8-sig') as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise DataError(f'Classification list {path!r} is not readable JSON: {exc}') from None
        if isinstance(data, dict):
            classes = data.get('classes')
            if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
                raise DataError(f"Classification list {path!r}: 'classes' must be a list of names.")
            data = data.get('samples')
        if not isinstance(data, list):
            raise DataError(f"Classification list {path!r} must hold a list of {{'file', 'label'}} objects or "
                            f"{{'classes': [...], 'samples': [...]}}.")
        for k, item in enumerate(data):
            where = f'entry {k} of {path!r}'
            if not isinstance(item, dict) or not isinstance(item.get('file'), str):
                raise DataError(f"Classification list: {where} has no 'file' string: {str(item)[:60]}.")
            label = item.get('labels', item.get('label'))
            labels = _split_labels(label) if label is not None else []
            rows.append((item['file'], labels, where))
        return rows, classes
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            table = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f'Classification list {path!r} is not a readable CSV file: {exc}') from None
    for line, row in enumerate(table, 1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith('#'):
            continue
        if line == 1 and tuple(c.lower() for c in cells[:2]) in _HEADERS:
            continue
        where = f'row {line} of {path!r}'
        if len(cells) < 2 or not cells[0]:
            raise DataError(f'Classification list: {where} is {",".join(row)[:60]!r}; expected file,label.')
        rows.append((cells[0], _split_labels(','.join(cells[1:])), where))
    return rows, classes


@DATASETS.register_module('ClassificationList')
class ClassificationList(ClassificationDataset):
    """Images listed with their class names in a CSV or JSON file (format: :func:`read_label_list`).

    Args:
        ann_file: the ``.csv`` or ``.json`` list.
        img_dir: folder the listed (relative) files are in; default the list's folder.
        pipeline: transform configs (see :class:`ClassificationDataset`).
        classes: class names; default ``metainfo['classes']``, else the JSON's ``classes``, else the sorted
            names found in the list.
        multi_label: targets are sets of classes (``;``-separated in CSV, lists in JSON); ``None`` = multi-label
            exactly when some row has several labels.
        metainfo: ``{'classes': [...]}`` from training data or a checkpoint.

    Raises:
        DataError (one line): a row whose label is not a known class (names the file, the row number and the
        known labels, closest first), several labels in a single-label list, an empty label, a file name that
        leaves ``img_dir``, listed images that do not exist.
    """

    def __init__(self, ann_file: str, img_dir: str | None = None, pipeline: Any = None,
                 classes: Sequence[str] | None = None, multi_label: bool | None = None,
                 metainfo: Mapping[str, Any] | None = None) -> None:
        ann_file = os.fspath(ann_file)
        rows, listed = read_label_list(ann_file)
        if not rows:
            raise DataError(f'Classification list {ann_file!r} lists no images.')
        img_dir = os.fspath(img_dir) if img_dir is not None else os.path.dirname(os.path.abspath(ann_file))
        if multi_label is None:
            multi_label = any(len(labels) > 1 for _, labels, _ in rows) or bool((metainfo or {}).get('multi_label'))
        given = (metainfo or {}).get('classes') or classes or listed
        names = [str(c) for c in given] if given else sorted({lab for _, labels, _ in rows for lab in labels})
        index = {c: i for i, c in enumerate(names)}
        records: list[tuple[str, Any]] = []
        for file, labels, where in rows:
            if not labels:
                raise DataError(f'Classification list: {where} ({file!r}) has no label.')
            if not multi_label and len(labels) > 1:
                raise DataError(f'Classification list: {where} ({file!r}) has {len(labels)} labels {labels[:4]} in '
                                f'a single-label list; set multi_label=True.')
            for lab in labels:
                if lab not in index:
                    close = closest_names(lab, names)
                    hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ''
                    shown = ', '.join(names[:20]) + (f' (+{len(names) - 20} more)' if len(names) > 20 else '')
                    raise DataError(f'Classification list: unknown label {lab!r} in {where} ({file!r}){hint}; '
                                    f'known labels: {shown}.')
            path = resolve_inside(img_dir, file, record=where)
            if multi_label:
                target = np.zeros(len(names), np.float32)
                target[[index[lab] for lab in labels]] = 1
            else:
                target = index[labels[0]]
            records.append((path, target))
        check_files_exist((r[0] for r in records), source=f'Classification list {ann_file!r}')
        self.ann_file = ann_file
        super().__init__(records, names, multi_label=multi_label, pipeline=pipeline,
                         source=f'ClassificationList {ann_file!r}')
