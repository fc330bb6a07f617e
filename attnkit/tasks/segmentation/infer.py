"""``attnkit infer`` for segmentors: the colour mask over each image, the label PNG, and attention heat maps.

For every image ``<name>``: ``<name>_seg.png`` (mask blended over the image), ``<name>_mask.png`` (palette PNG of
class indices at the original size) and, for every attention module that records a spatial map (DANet's
position attention ``decode_head.pam``, criss-cross, CBAM...), ``<name>_attn_<module>.png``: where the query
pixel looks. The query pixel is ``attn_point`` (y, x): ints are original-image pixels, floats in [0, 1] relative
positions; default the image centre. Set it with the keyword, or in the config
(``--cfg-options infer_cfg.attn_point="(40, 60)"`` once the config has ``infer_cfg = dict(attn_point=None)``).
Nothing is overwritten: when a name is an input, another output or an existing file, the image's files take the
next free number (``<name>_seg_1.png``, ``<name>_mask_1.png``...).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ...data import Pipeline
from ...data.outputs import OutputNames
from ...data.palette import voc_palette
from ...data.single_image import prepare_image
from ...registry import INFERENCERS
from .visualize import attention_heatmap, blend_mask, save_label_png

__all__ = ['infer_segmentor', 'test_pipeline']


def test_pipeline(cfg: Any) -> Pipeline:
    """The evaluation pipeline of a config (``data.test``, else ``data.val``), as a :class:`Pipeline`."""
    data = cfg.get('data') or {}
    part = data.get('test') or data.get('val') or {}
    pipeline = (part.get('dataset') or {}).get('pipeline') or []
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, dict):
        args = dict(pipeline)
        return Pipeline(list(args.pop('transforms', [])), **args)
    return Pipeline([dict(t) for t in pipeline])


def _query(point: Sequence[float] | None, ori: tuple[int, int], img: tuple[int, int], pad: tuple[int, int]
           ) -> tuple[tuple[float, float], tuple[int, int]]:
    """(relative query in the padded input, query pixel in the original image)."""
    h0, w0 = ori
    if point is None:
        point = (0.5, 0.5)
    if len(point) != 2:
        raise ValueError(f'attn_point must be (y, x), got {point!r}.')
    y, x = point
    if isinstance(y, float) and isinstance(x, float) and 0 <= y <= 1 and 0 <= x <= 1:
        y0, x0 = min(int(y * h0), h0 - 1), min(int(x * w0), w0 - 1)
    else:
        y0, x0 = int(y), int(x)
        if not (0 <= y0 < h0 and 0 <= x0 < w0):
            raise ValueError(f'attn_point {point!r} is outside the {w0}x{h0} image.')
    rel = ((y0 + 0.5) * img[0] / h0 / pad[0], (x0 + 0.5) * img[1] / w0 / pad[1])
    return (min(rel[0], 1.0), min(rel[1], 1.0)), (y0, x0)


@torch.no_grad()
def infer_segmentor(model: torch.nn.Module, cfg: Any, images: Sequence[str], out_dir: str,
                    question: str | None = None, attn_point: Sequence[float] | None = None,
                    alpha: float = 0.5) -> list[str]:
    """Segment ``images`` and write pictures (see the module docstring). Returns the files written.

    Args:
        model: a built ``Segmentor`` (eval mode is set here); ``metainfo`` gives classes and palette.
        cfg: the config: its test/val pipeline; ``infer_cfg.attn_point`` when ``attn_point`` is not given.
        images: image files.
        out_dir: destination folder.
        question: unused (VQA only).
        attn_point: query pixel (y, x) for the attention heat maps.
        alpha: mask opacity.
    """
    from ...attention import record
    model.eval()
    if attn_point is None:
        attn_point = ((cfg.get('infer_cfg') or {}).get('attn_point') if hasattr(cfg, 'get') else None)
    pipeline = test_pipeline(cfg)
    meta_info = getattr(model, 'metainfo', None) or {}
    palette = meta_info.get('palette') or voc_palette(len(meta_info.get('classes') or []) or 256)
    device = next(model.parameters()).device
    names = OutputNames(out_dir, images)
    written: list[str] = []
    for path in images:
        image, batch = prepare_image(path, pipeline, device)
        (h0, w0), (h, w) = batch['metas'][0]['ori_size'], batch['metas'][0]['img_size']
        pad = tuple(batch['images'].shape[-2:])
        rel, pixel = _query(attn_point, (h0, w0), (h, w), pad)
        with record(model, query=rel) as maps:
            pred = model(batch)[0]['sem_seg'].cpu().numpy()
        stem = os.path.splitext(os.path.basename(path))[0]
        attn_suffixes = [f"_attn_{name.replace('.', '_')}.png" for name in maps]
        n = names.number(stem, ('_seg.png', '_mask.png', *attn_suffixes))  # one number for all files of the image
        seg_png = names.claim(stem, '_seg.png', n)
        Image.fromarray(blend_mask(image, pred, palette, alpha)).save(seg_png)
        mask_png = names.claim(stem, '_mask.png', n)
        save_label_png(mask_png, pred, palette)
        written += [seg_png, mask_png]
        for name, amap in maps.items():
            if amap.dim() != 4 or amap.shape[-2:] == (1, 1):
                continue  # channel attention (N, C, C) / (N, C) has no spatial picture
            a = amap[0].float().mean(0)  # (h', w') over the padded input, heads averaged
            ah, aw = a.shape
            a = a[: max(1, round(ah * h / pad[0])), : max(1, round(aw * w / pad[1]))].cpu().numpy()
            png = names.claim(stem, f"_attn_{name.replace('.', '_')}.png", n)
            Image.fromarray(attention_heatmap(image, a, pixel)).save(png)
            written.append(png)
    return written


INFERENCERS.register_module('Segmentor', module=infer_segmentor)
