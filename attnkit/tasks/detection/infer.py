"""``attnkit infer`` for detectors: run on image files, write PNG pictures and a JSON of the detections."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch

from ...data.outputs import OutputNames
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
    """Detect objects in ``images``; write ``<out_dir>/<name>_pred.png`` (boxes, class names, scores drawn) and
    ``<out_dir>/<name>_pred.json`` (all detections, original pixels). Returns the files written.

    No file is overwritten: an input, another output of this call or an existing file keeps its name and the
    new file becomes ``<name>_pred_1.png`` (``_2``...; the JSON takes the same number).

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
    names = OutputNames(out_dir, images)
    written = []
    for path in images:
        image, batch = prepare_image(path, pipeline, device)
        pred = model(batch)[0]
        boxes, scores, labels = (pred[k].float().cpu().numpy() if k != 'labels' else pred[k].cpu().numpy()
                                 for k in ('boxes', 'scores', 'labels'))
        stem = os.path.splitext(os.path.basename(path))[0]
        n = names.number(stem, ('_pred.png', '_pred.json'))
        png = names.claim(stem, '_pred.png', n)
        draw_detections(image, boxes, labels, scores, classes, score_thr=score_thr).save(png)
        js = names.claim(stem, '_pred.json', n)
        with open(js, 'x') as f:
            json.dump([{'bbox_xyxy': [round(float(v), 2) for v in b], 'score': round(float(s), 4),
                        'label': int(lab), 'class': classes[int(lab)] if int(lab) < len(classes) else str(int(lab))}
                       for b, s, lab in zip(boxes, scores, labels)], f, indent=1)
        written += [png, js]
    return written


INFERENCERS.register_module('Detector', module=infer_detector)
