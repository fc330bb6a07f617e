"""``attnkit infer`` for image classifiers: print the top-k classes, write a picture of them and, when the pooling
head records where it looked (``attnpool``, ``class_attention``, ``ml_decoder``), a heat map of that attention.

For every image ``<name>``: ``<name>_cls.png`` (the image with its top-k classes and scores), ``<name>_cls.json``
(the same numbers) and ``<name>_attn_<module>.png`` for each spatial map the head records (heads averaged; for a
head with one query per class, the top-1 class's query). Nothing is overwritten: the image's files take the next
free number when a name is taken (``<name>_cls_1.png``...).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ...data.outputs import OutputNames
from ...data.single_image import prepare_image
from ...registry import INFERENCERS
from ..segmentation.infer import test_pipeline
from .visualize import draw_topk, head_attention_picture

__all__ = ['infer_classifier', 'spatial_map', 'record_head']


@contextlib.contextmanager
def record_head(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """``attnkit.attention.record(model)``, restricted to the maps of ``model.head``; a head that records through
    a ``_recorder`` attribute without being an attention module is recorded too."""
    from ...attention import record
    from ...attention.record import Recorder
    head = getattr(model, 'head', None)
    with record(model) as maps:
        extra = []
        if head is not None:
            for name, m in head.named_modules():
                if hasattr(m, '_recorder') and getattr(m, '_recorder') is None:
                    full = 'head' + (f'.{name}' if name else '')
                    m._recorder = Recorder(full, maps, None)
                    extra.append(m)
        try:
            yield maps
        finally:
            for m in extra:
                m._recorder = None
            for key in [k for k in maps if not (k == 'head' or k.startswith('head.'))]:
                del maps[key]


def spatial_map(amap: torch.Tensor, per_query: bool, num_classes: int, cls_index: int) -> np.ndarray | None:
    """A (h, w) picture of one image's recorded head map, or None when it is not spatial.

    Args:
        amap: the map of one image: (heads, H, W) or (H, W); with ``per_query`` (ML-Decoder: the head's
            ``pooled_maps`` is ``(N, G, H, W)``) one map per query, G = K or G groups of ``ceil(K / G)`` classes.
        per_query: take the query of class ``cls_index`` instead of averaging the leading axis.
        num_classes: K.
        cls_index: the class whose query is shown (the top-1 class).
    """
    a = amap.float()
    if a.dim() < 2 or a.shape[-1] * a.shape[-2] <= 1:
        return None
    if per_query and a.dim() >= 3:
        groups = a.shape[-3]
        per_group = -(-num_classes // groups)
        a = a.select(-3, min(cls_index // per_group, groups - 1))
    while a.dim() > 2:
        a = a.mean(0)
    return a.cpu().numpy()


@torch.no_grad()
def infer_classifier(model: torch.nn.Module, cfg: Any, images: Sequence[str], out_dir: str,
                     question: str | None = None, topk: int | None = None) -> list[str]:
    """Classify ``images``: print the top-k classes, write pictures and JSON (see the module docstring).

    Args:
        model: a built :class:`ImageClassifier` (eval mode is set here).
        cfg: the config (its test/val pipeline resizes the images as in evaluation).
        images: image files. out_dir: destination folder.
        question: unused (VQA only).
        topk: classes listed per image (default the model's ``topk``).

    Returns:
        The files written.
    """
    model.eval()
    pipeline = test_pipeline(cfg)
    classes = list((getattr(model, 'metainfo', None) or {}).get('classes') or [])
    device = next(model.parameters()).device
    names = OutputNames(out_dir, images)
    written: list[str] = []
    for path in images:
        image, batch = prepare_image(path, pipeline, device)
        with record_head(model) as maps:
            pred = model(batch)[0]
        scores = pred['scores'].float().cpu()
        k = min(topk or getattr(model, 'topk', 5), scores.numel())
        top = scores.topk(k)
        top_names = [classes[i] if i < len(classes) else str(i) for i in top.indices.tolist()]
        print(f'{path}:')
        for rank, (name, score) in enumerate(zip(top_names, top.values.tolist()), 1):
            print(f'  {rank}. {name:<20} {score:.4f}')
        stem = os.path.splitext(os.path.basename(path))[0]
        attn = {}
        (h, w), pad = batch['metas'][0]['img_size'], tuple(batch['images'].shape[-2:])
        spec = str(getattr(getattr(model, 'head', None), 'pooled_maps', None) or '')
        per_query = spec.replace(' ', '').startswith(('(N,G', '(N,K'))
        for name, amap in maps.items():
            a = spatial_map(amap[0], per_query, len(classes) or scores.numel(), int(top.indices[0]))
            if a is not None:  # crop the map to the image (not the collate's padding)
                ah, aw = a.shape
                attn[name] = a[: max(1, round(ah * h / pad[0])), : max(1, round(aw * w / pad[1]))]
        suffixes = ['_cls.png', '_cls.json'] + [f"_attn_{n.replace('.', '_')}.png" for n in attn]
        n = names.number(stem, suffixes)
        png = names.claim(stem, '_cls.png', n)
        title = 'multi-label' if getattr(model, 'multi_label', False) else ''
        draw_topk(image, top_names, top.values.tolist(), title).save(png)
        js = names.claim(stem, '_cls.json', n)
        with open(js, 'x') as f:
            json.dump({'image': path, 'topk': [{'class': c, 'index': int(i), 'score': round(float(s), 6)}
                                               for c, i, s in zip(top_names, top.indices, top.values)]}, f, indent=1)
        written += [png, js]
        for name, a in attn.items():
            pic = names.claim(stem, f"_attn_{name.replace('.', '_')}.png", n)
            head_attention_picture(image, a).save(pic)
            written.append(pic)
    return written


INFERENCERS.register_module('ImageClassifier', module=infer_classifier)
