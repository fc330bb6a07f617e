"""``attnkit infer`` for detectors: run on image files, write PNG pictures and a JSON of the detections."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch

from ...data.single_image import prepare_image
from ...registry import INFERENCERS
from .datasets.base import build_pipeline
from .visualize import draw_detections

__all__ = ['infer_detector', 'test_pipeline_cfg']


def test_pipeline_cfg(cfg: Any) -> Any:
    """The evaluation pipeline of a config: ``data.test`` or else ``data.val`` dataset's ``pipeline``."""
    data = cfg.get('data') or {}
    part = data.get('test') or data.get('val') or {}
    return (part.get('dataset') or {}).get('pipeline') or []


@torch.no_grad()
def infer_detector(model: torch.nn.Module, cfg: Any, images: Sequence[str], out_dir: str,
                   question: str | None = None, score_thr: float = 0.3) -> list[str]:
    """Detect objects in ``images``; write ``<out_dir>/<name>.png`` (boxes, class names, scores drawn) and
    ``<out_dir>/<name>.json`` (all detections, original pixels). Returns the files written.

    Args:
        model: a built ``Detector`` (eval mode is set here); its ``metainfo['classes']`` names the classes.
        cfg: the config (its test/val pipeline resizes and normalises the images).
        question: unused (VQA only).
        score_thr: drawing threshold.
    """
    model.eval()
    pipeline = build_pipeline(test_pipeline_cfg(cfg))
    classes = list((getattr(model, 'metainfo', None) or {}).get('classes') or [])
    device = next(model.parameters()).device
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path in images:
        image, batch = prepare_image(path, pipeline, device)
        pred = model(batch)[0]
        boxes, scores, labels = (pred[k].float().cpu().numpy() if k != 'labels' else pred[k].cpu().numpy()
                                 for k in ('boxes', 'scores', 'labels'))
        stem = os.path.splitext(os.path.basename(path))[0]
        png = os.path.join(out_dir, f'{stem}.png')
        draw_detections(image, boxes, labels, scores, classes, score_thr=score_thr).save(png)
        js = os.path.join(out_dir, f'{stem}.json')
        with open(js, 'w') as f:
            json.dump([{'bbox_xyxy': [round(float(v), 2) for v in b], 'score': round(float(s), 4),
                        'label': int(lab), 'class': classes[int(lab)] if int(lab) < len(classes) else str(int(lab))}
                       for b, s, lab in zip(boxes, scores, labels)], f, indent=1)
        written += [png, js]
    return written


INFERENCERS.register_module('Detector', module=infer_detector)
