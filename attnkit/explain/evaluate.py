"""``attnkit explain --eval``: interpretability as numbers over the val set (see docs/interpretability.md).

For each of the first ``num_images`` val images (VQA: the first ``num_images`` questions of the form "what color
is the SHAPE?", whose object is the only one of that shape), every spatial map — each attention module's map
(self-attention: the head mean at the target's centre), rollout, the VQA fusion attention, Grad-CAM and
Grad-CAM++ — is scored against the ground-truth objects (energy inside, pointing hit; the objects' area fraction
is what a uniform map scores) and by RISE deletion/insertion for the image's target (a random map's curves
beside them). Rows are averaged over the images (NaN-free values only).
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .analysis import Analysis, ImageInput, analyse
from .metrics import area_fraction, deletion_insertion, energy_inside, pointing_hit
from .saliency import METHODS

__all__ = ['evaluate_interpretability', 'format_table', 'SCHEMA_VERSION']

SCHEMA_VERSION = 1
_COLOUR_QUESTION = re.compile(r'^\s*what colou?r is the (\w+)\s*\?\s*$', re.IGNORECASE)


def _val_dataset(cfg: Mapping[str, Any], model: nn.Module) -> Any:
    from ..builder import build_dataset
    data = cfg.get('data') or {}
    part = data.get('val') or data.get('test')
    if not part or not part.get('dataset'):
        raise ConfigError('attnkit explain --eval needs data.val (or data.test) in the config.')
    return build_dataset(part['dataset'], metainfo=getattr(model, 'metainfo', None))


def _objects(task: str, sample: Mapping[str, Any], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """(objects (H0, W0) bool, valid (H0, W0) bool or None) of a dataset sample, at the original size."""
    meta = sample['meta']
    h, w = (int(v) for v in meta['img_size'])
    h0, w0 = (int(v) for v in meta['ori_size'])
    valid = None
    if task == 'detection':
        objects = np.zeros((h, w), bool)
        for x1, y1, x2, y2 in np.asarray(sample['boxes'], np.float32).reshape(-1, 4):
            objects[max(0, int(y1)):int(math.ceil(y2)), max(0, int(x1)):int(math.ceil(x2))] = True
    elif task == 'segmentation':
        mask = np.asarray(sample['mask'])[:h, :w]
        objects, valid = (mask != 0) & (mask != 255), mask != 255
    else:  # VQA: the object the question names, from the demo set's VOC class masks
        match = _COLOUR_QUESTION.match(sample['question'])
        seg_file = re.sub(r'JPEGImages', 'SegmentationClass', os.path.splitext(meta['file'])[0]) + '.png'
        if not os.path.isfile(seg_file):
            raise DataError(f'attnkit explain --eval (VQA) needs the class masks of the demo data: {seg_file!r} '
                            'does not exist.')
        from PIL import Image
        seg = np.asarray(Image.open(seg_file))
        objects = seg == classes.index(match.group(1).lower()) + 1
        return objects, None  # already at the original size
    if (h, w) != (h0, w0):
        resize = lambda m: F.interpolate(torch.from_numpy(m.astype(np.float32))[None, None], size=(h0, w0),  # noqa
                                         mode='nearest')[0, 0].numpy() > 0.5
        objects = resize(objects)
        valid = resize(valid) if valid is not None else None
    return objects, valid


def _to_input(amap: np.ndarray, meta: Mapping[str, Any], pad: Sequence[int]) -> np.ndarray:
    """A map over the original image -> over the padded input (resized to ``img_size``, zeros in the padding)."""
    h, w = (int(v) for v in meta['img_size'])
    t = F.interpolate(torch.from_numpy(np.asarray(amap, np.float32))[None, None], size=(h, w), mode='bilinear',
                      align_corners=False)[0, 0]
    out = torch.zeros(tuple(int(v) for v in pad))
    out[:h, :w] = t
    return out.numpy()


def _maps_of(a: Analysis) -> list[tuple[str | None, str, np.ndarray]]:
    """(module, method, map at the original size) of every map scored: per-module attention (head mean),
    rollout, fusion attention, gradient saliency."""
    out = [(s['module'] if s['kind'] != 'rollout' else '+'.join(s['modules']), s['kind'], s['map'])
           for s in a.spatial if s['head'] in (None, 'mean')]
    out += [(None, k, v) for k, v in a.saliency.items()]
    return out


def _samples(task: str, dataset: Any, num_images: int, classes: Sequence[str]) -> list[int]:
    if task != 'vqa':
        return list(range(min(num_images, len(dataset))))
    picked = []
    for i in range(len(dataset)):
        records = getattr(dataset, 'records', None)
        q = records[i]['question'] if records is not None and 'question' in records[i] else dataset[i]['question']
        m = _COLOUR_QUESTION.match(q)
        if m and m.group(1).lower() in classes:
            picked.append(i)
            if len(picked) == num_images:
                break
    return picked


def evaluate_interpretability(model: nn.Module, cfg: Mapping[str, Any], *, task: str, num_images: int = 20,
                              steps: int = 16, methods: Sequence[str] = METHODS, faithfulness: bool = True,
                              seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """The agreement and faithfulness table of ``model`` on the config's val set.

    Args:
        model: the task model (eval mode, on its device).
        cfg: the config (``data.val``).
        task: 'detection' | 'segmentation' | 'vqa'.
        num_images: val images (VQA: colour questions) to score.
        steps: deletion/insertion curve steps.
        methods: gradient-saliency methods.
        faithfulness: compute the deletion/insertion AUCs (the slow part).
        seed: the random baseline map's seed.

    Returns:
        The ``interpretability.json`` document (schema in docs/interpretability.md).
    """
    from ..data.collate import collate
    from .run import _add_question
    model.eval()
    dataset = _val_dataset(cfg, model)
    classes = [str(c) for c in (getattr(dataset, 'metainfo', None) or {}).get('classes') or
               (getattr(model, 'metainfo', None) or {}).get('classes') or []]
    if task == 'vqa':
        from ..data.demo_scene import CLASSES
        classes = list(CLASSES)
    indices = _samples(task, dataset, num_images, classes)
    if not indices:
        raise ConfigError('attnkit explain --eval: no val sample to score' +
                          (' (VQA: no question of the form "what color is the SHAPE?")' if task == 'vqa' else '.'))
    rng = np.random.default_rng(seed)
    rows: dict[tuple[str | None, str], dict[str, list[float]]] = {}
    skipped: list[str] = []
    device = next(model.parameters()).device
    start = time.perf_counter()
    for n, idx in enumerate(indices):
        sample = dataset[idx]
        meta = sample['meta']
        batch = collate([{'image': sample['image'], 'meta': meta}])
        batch['images'] = batch['images'].to(device)
        question = sample.get('question')
        if task == 'vqa':
            _add_question(model, batch, question)
        inp = ImageInput(np.zeros((*meta['ori_size'], 3), np.uint8), batch, str(meta.get('id')), question)
        try:
            a = analyse(model, task, inp, None, methods)
        except ConfigError as exc:  # e.g. a detector that finds nothing in this image: no target
            skipped.append(f'{meta.get("file", idx)}: {exc}')
            continue
        objects, valid = _objects(task, sample, classes)
        if not objects.any():
            skipped.append(f'{meta.get("file", idx)}: no ground-truth object')
            continue
        area = area_fraction(objects, valid)
        pad = tuple(batch['images'].shape[-2:])
        scored = _maps_of(a)
        random_map = rng.random(objects.shape).astype(np.float32)
        score_fn = _score_fn(a) if faithfulness else None
        for module, method, amap in scored + [(None, 'random', random_map)]:
            row = rows.setdefault((module, method), {})
            row.setdefault('area_fraction', []).append(area)
            if method != 'random':
                row.setdefault('energy', []).append(energy_inside(amap, objects, valid))
                row.setdefault('hit_rate', []).append(pointing_hit(amap, objects, valid))
            if faithfulness:
                d, i, _, _ = deletion_insertion(score_fn, batch['images'][0].float(), _to_input(amap, meta, pad),
                                                steps=steps)
                row.setdefault('deletion_auc', []).append(d)
                row.setdefault('insertion_auc', []).append(i)
        if progress:
            print(f'\r{n + 1}/{len(indices)} images ({time.perf_counter() - start:.0f} s)', end='', flush=True)
    if progress:
        print()
    table = []
    for (module, method), values in rows.items():
        def mean(key: str) -> float | None:
            v = [x for x in values.get(key, []) if not math.isnan(x)]
            return round(float(np.mean(v)), 4) if v else None
        table.append({'module': module, 'method': method, 'energy': mean('energy'), 'hit_rate': mean('hit_rate'),
                      'area_fraction': mean('area_fraction'), 'deletion_auc': mean('deletion_auc'),
                      'insertion_auc': mean('insertion_auc'), 'images': len(values['area_fraction'])})
    attention = [r for r in table if r['method'] in ('attention', 'self_attention', 'rollout', 'fusion_attention')
                 and r['energy'] is not None]
    best = max(attention, key=lambda r: r['energy']) if attention else None
    return {'schema_version': SCHEMA_VERSION, 'task': task, 'model': type(model).__name__,
            'num_images': len(indices) - len(skipped), 'steps': steps if faithfulness else None,
            'target': {'detection': 'box:0 (top-scoring detection)', 'segmentation': 'class:<largest predicted '
                       'non-background class>', 'vqa': 'answer:<top answer>'}[task],
            'objects': {'detection': 'union of the ground-truth boxes', 'segmentation': 'ground-truth '
                        'non-background pixels (ignore label excluded)', 'vqa': 'the object the question names '
                        '(demo class mask)'}[task],
            'rows': table, 'best_attention': None if best is None else {'module': best['module'],
                                                                        'method': best['method'],
                                                                        'energy': best['energy']},
            'no_attention_module': not any(r['method'] in ('attention', 'self_attention') for r in table),
            'skipped': skipped, 'seconds': round(time.perf_counter() - start, 1)}


def _score_fn(a: Analysis) -> Any:
    target = a.target.make(a.scorer, True)

    def score(images: torch.Tensor) -> torch.Tensor:
        out = a.scorer(images)
        return torch.stack([target(o) for o in out])
    return score


def format_table(doc: Mapping[str, Any]) -> str:
    """The rows as a fixed-width text table (one line per module and method)."""
    def f(v: Any) -> str:
        return '-' if v is None else f'{v:.3f}'
    head = (f'{"module":<34} {"method":<16} {"energy":>7} {"hit":>6} {"uniform":>7} {"del.AUC":>7} {"ins.AUC":>7} '
            f'{"n":>4}')
    lines = [f'{doc["model"]} ({doc["task"]}), {doc["num_images"]} images, target {doc["target"]}', head,
             '-' * len(head)]
    for r in doc['rows']:
        module = r['module'] or '-'
        module = module if len(module) <= 34 else '...' + module[-31:]
        lines.append(f'{module:<34} {r["method"]:<16} {f(r["energy"]):>7} {f(r["hit_rate"]):>6} '
                     f'{f(r["area_fraction"]):>7} {f(r["deletion_auc"]):>7} {f(r["insertion_auc"]):>7} '
                     f'{r["images"]:>4}')
    if doc.get('best_attention'):
        b = doc['best_attention']
        lines.append(f'most object-aligned attention: {b["module"]} ({b["method"]}, energy {b["energy"]:.3f})')
    if doc.get('no_attention_module'):
        lines.append('no attention module was found in this model: gradient saliency only')
    return '\n'.join(lines)


def write_json(doc: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``doc`` as indented JSON (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1), encoding='utf-8')
    return path
