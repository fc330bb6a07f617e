"""Linear probes of a VQA model's image grid: does each grid cell know the shape and colour of its object?

A diagnostic for models trained from question-answer pairs alone (docs/bench/vqa.md, "From scratch"): the grid
features at every cell are mapped by a closed-form ridge regression (one-hot targets, argmax prediction) to the
label of the object covering that cell (0 = background), fitted on some images and scored on held-out ones.

Labels come from COCO instance annotations (``images``, ``annotations`` with ``bbox`` and polygon
``segmentation``, ``categories``): the shape is the category. COCO has no colour field; the colour is read from
an annotation's ``colour``/``color`` key or ``attributes['colour'|'color']`` when present, otherwise from the
pixels: the mean RGB of the object's visible region, nearest in a palette (default: the shapes demo's
:data:`~attnkit.data.demo_scene.COLOUR_RGB`).

Typical use::

    labels = cell_labels(coco_json, img_dir, grid=(8, 8))
    feats = model_grid(model, images)            # (M, C, 8, 8), images: (M, 3, H, W) uint8 of labels['image_ids']
    probe_grid(feats, labels['shape'], num_classes=len(labels['shape_names']))
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ...data.demo_scene import COLOUR_RGB
from ...errors import ConfigError, DataError

__all__ = ['object_colour', 'cell_labels', 'fit_ridge_probe', 'probe_accuracy', 'probe_grid', 'model_grid']


def object_colour(image: np.ndarray, mask: np.ndarray, palette: Mapping[str, Sequence[float]] = COLOUR_RGB) -> str:
    """The palette colour nearest (RGB distance) to the mean of ``image`` (H, W, 3) uint8 over ``mask`` (H, W) bool."""
    if not mask.any():
        raise DataError('object_colour: the object mask is empty.')
    mean = image[mask].reshape(-1, 3).astype(np.float64).mean(0)
    names = list(palette)
    dist = [float(((mean - np.asarray(palette[n], np.float64)) ** 2).sum()) for n in names]
    return names[int(np.argmin(dist))]


def _annotated_colour(ann: Mapping[str, Any]) -> str | None:
    for src in (ann, ann.get('attributes') or {}):
        for key in ('colour', 'color'):
            if isinstance(src, Mapping) and src.get(key):
                return str(src[key])
    return None


def _object_mask(ann: Mapping[str, Any], height: int, width: int) -> np.ndarray:
    """(H, W) bool: the polygon ``segmentation`` rasterised, or the ``bbox`` when there is none."""
    canvas = Image.new('L', (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    seg = ann.get('segmentation')
    if isinstance(seg, list) and seg:
        for poly in seg:
            pts = [(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)]
            if len(pts) >= 3:
                draw.polygon(pts, fill=1)
    else:
        x, y, w, h = (float(v) for v in ann['bbox'])
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=1)
    return np.asarray(canvas, dtype=bool)


def cell_labels(coco: str | os.PathLike | Mapping[str, Any], img_dir: str | os.PathLike | None = None,
                grid: tuple[int, int] = (8, 8), image_ids: Sequence[int] | None = None,
                palette: Mapping[str, Sequence[float]] = COLOUR_RGB, min_cover: float = 0.3) -> dict[str, Any]:
    """Per-cell shape and colour labels of the images of a COCO instances file.

    Each image is cut into a ``grid`` (h, w) of equal cells; a cell takes the object covering most of it, if
    that object covers at least ``min_cover`` of the cell, else background (label 0).

    Args:
        coco: path of a COCO instances json, or its loaded dict.
        img_dir: folder of the images (``file_name``); needed only when colours are read from pixels.
        grid: (h, w) cells — the model's grid size.
        image_ids: which images (default: all, in the file's order).
        palette: colour name -> RGB (0..255) for colours read from pixels; also fixes the colour label order.
        min_cover: fraction of a cell an object must cover to label it.

    Returns:
        ``{'image_ids': [M], 'shape': (M, h, w) long (0 = background, k = k-th category), 'colour': (M, h, w)
        long (0 = background, k = k-th palette colour), 'shape_names': ['background', *categories],
        'colour_names': ['background', *palette]}``.
    """
    if not isinstance(coco, Mapping):
        with open(coco, encoding='utf-8') as f:
            coco = json.load(f)
    for key in ('images', 'annotations', 'categories'):
        if key not in coco:
            raise DataError(f"cell_labels: the COCO file has no {key!r} list (keys: {sorted(coco)}).")
    cats = sorted(coco['categories'], key=lambda c: c['id'])
    cat_index = {c['id']: k + 1 for k, c in enumerate(cats)}
    colour_names = list(palette)
    images = {int(im['id']): im for im in coco['images']}
    ids = list(images) if image_ids is None else [int(i) for i in image_ids]
    missing = [i for i in ids if i not in images]
    if missing:
        raise DataError(f'cell_labels: image ids {missing[:5]} are not in the COCO file.')
    by_image: dict[int, list[Mapping[str, Any]]] = {i: [] for i in ids}
    for ann in coco['annotations']:
        if int(ann['image_id']) in by_image:
            by_image[int(ann['image_id'])].append(ann)
    h, w = grid
    shape = torch.zeros(len(ids), h, w, dtype=torch.long)
    colour = torch.zeros(len(ids), h, w, dtype=torch.long)
    for m, image_id in enumerate(ids):
        info, anns = images[image_id], by_image[image_id]
        if not anns:
            continue
        H, W = int(info['height']), int(info['width'])
        masks = np.stack([_object_mask(a, H, W) for a in anns])  # (K, H, W)
        pixels = None
        cols = []
        for a, mask in zip(anns, masks):
            name = _annotated_colour(a)
            if name is None:
                if img_dir is None:
                    raise ConfigError('cell_labels: the annotations carry no colour; give img_dir to read it from '
                                      'the pixels.')
                if pixels is None:
                    pixels = np.asarray(Image.open(os.path.join(img_dir, info['file_name'])).convert('RGB'))
                name = object_colour(pixels, mask, palette) if mask.any() else colour_names[0]
            if name not in colour_names:
                raise DataError(f'cell_labels: colour {name!r} of annotation {a.get("id")} is not in the palette '
                                f'{colour_names}.')
            cols.append(colour_names.index(name) + 1)
        cover = F.adaptive_avg_pool2d(torch.from_numpy(masks).float()[None], (h, w))[0]  # (K, h, w)
        best, which = cover.max(0)
        on = best >= min_cover
        shape[m][on] = torch.tensor([cat_index[int(a['category_id'])] for a in anns])[which][on]
        colour[m][on] = torch.tensor(cols)[which][on]
    return {'image_ids': ids, 'shape': shape, 'colour': colour,
            'shape_names': ['background', *[c['name'] for c in cats]], 'colour_names': ['background', *colour_names]}


def fit_ridge_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-2
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form ridge regression from features to one-hot labels.

    Args:
        x: (n, C) features; y: (n,) long labels in [0, num_classes); l2: ridge strength per sample (the penalty
            is ``l2 * n * |W|^2`` on standardised features).

    Returns:
        ``(weight (C + 1, K), mean (C,), std (C,))``: predict with :func:`_predict`.
    """
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    target = F.one_hot(y, num_classes).double()
    reg = l2 * len(x) * torch.eye(z.shape[1], dtype=x.dtype)
    reg[-1, -1] = 0  # no penalty on the bias
    weight = torch.linalg.solve(z.T @ z + reg, z.T @ target)
    return weight, mean, std


def _predict(x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
             first: int = 0) -> torch.Tensor:
    z = torch.cat([(x.double() - mean) / std, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    return (z @ weight)[:, first:].argmax(1) + first


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   num_classes: int, l2: float = 1e-2, objects_only: bool = False) -> dict[str, float]:
    """Fit on (train_x (n, C), train_y (n,)), score on (test_x (m, C), test_y (m,)).

    Returns ``accuracy`` (all held-out cells), ``object_accuracy`` (cells with label != 0: the part that says
    whether the features know the objects, as background dominates), and the rates of always predicting the
    training split's most frequent label: ``majority`` (all cells) and ``object_majority`` (most frequent
    non-zero label, on object cells). NaN where a split has no object cell.

    ``objects_only``: fit and score on object cells only, predicting among labels 1.. (which shape/colour, given
    that a cell is on an object); ``accuracy`` and ``majority`` then equal the ``object_`` figures.
    """
    if objects_only:
        keep, keep_test = train_y != 0, test_y != 0
        train_x, train_y, test_x, test_y = train_x[keep], train_y[keep], test_x[keep_test], test_y[keep_test]
        if not len(train_y) or not len(test_y):
            raise ValueError('probe_accuracy(objects_only=True): no object cell to fit or to score.')
    weight, mean, std = fit_ridge_probe(train_x, train_y, num_classes, l2)
    pred = _predict(test_x, weight, mean, std, first=1 if objects_only else 0)
    obj = test_y != 0
    counts = torch.bincount(train_y, minlength=num_classes)
    top = int(counts[1:].argmax()) + 1 if objects_only else int(counts.argmax())
    top_obj = int(counts[1:].argmax()) + 1 if num_classes > 1 else 0
    nan = float('nan')
    return {'accuracy': float((pred == test_y).double().mean()),
            'object_accuracy': float((pred[obj] == test_y[obj]).double().mean()) if obj.any() else nan,
            'majority': float((test_y == top).double().mean()),
            'object_majority': float((test_y[obj] == top_obj).double().mean()) if obj.any() else nan}


def probe_grid(features: torch.Tensor, labels: torch.Tensor, num_classes: int, fit_fraction: float = 0.5,
               l2: float = 1e-2, objects_only: bool = False) -> dict[str, float]:
    """Probe grid features (M, C, h, w) for per-cell labels (M, h, w): fit on the first ``fit_fraction`` of the
    images, score on the rest (held-out images, not cells). Returns :func:`probe_accuracy`'s dict
    (``objects_only``: see there)."""
    if features.dim() != 4 or labels.shape != (features.shape[0], *features.shape[-2:]):
        raise ValueError(f'probe_grid: features (M, C, h, w) and labels (M, h, w) expected, got '
                         f'{tuple(features.shape)} and {tuple(labels.shape)}.')
    m = features.shape[0]
    cut = int(round(m * fit_fraction))
    if not 0 < cut < m:
        raise ValueError(f'probe_grid: fit_fraction {fit_fraction} leaves no image to fit or to score ({m} images).')
    x = features.detach().float().permute(0, 2, 3, 1).reshape(m, -1, features.shape[1])
    y = labels.reshape(m, -1)
    return probe_accuracy(x[:cut].flatten(0, 1), y[:cut].flatten(), x[cut:].flatten(0, 1), y[cut:].flatten(),
                          num_classes, l2, objects_only)


@torch.no_grad()
def model_grid(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The image grid (M, C, h, w) of uint8 ``images`` (M, 3, H, W), in eval mode (restored afterwards).

    ``model``: a :class:`~attnkit.tasks.vqa.model.VQAModel` (its normaliser and ``image_grid``) or a plain
    backbone (float images in, its last output map is the grid).
    """
    was = model.training
    model.eval()
    try:
        outs = []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            if hasattr(model, 'image_grid'):
                outs.append(model.image_grid(model.normalizer(chunk, None)))
            else:
                out = model(chunk.float() / 255)
                outs.append(out[-1] if isinstance(out, (list, tuple)) else out)
        return torch.cat(outs)
    finally:
        model.train(was)
