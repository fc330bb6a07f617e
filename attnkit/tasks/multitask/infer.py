"""``attnkit infer CONFIG CKPT IMAGE --question "..."`` for a ``MultiTaskModel``: all branches in one backbone pass,
drawn on ONE picture ``<name>_multitask.png`` — the segmentation mask blended over the image, the detected boxes on
top, the question and the top answers under it — plus ``<name>_multitask.json`` (boxes in original pixels, the
classes in the mask, the answers). Images under 384 px are enlarged (nearest neighbour) so captions stay
readable. The picture reuses the tasks' own drawing code (segmentation ``blend_mask``, detection
``draw_detections``, VQA ``overlay_attention`` for the text; the VQA attention map is left out so the boxes and the
mask stay visible: the single-task VQA inferencer draws it).

The image goes through ONE pipeline for every branch (one backbone pass): ``infer_cfg.pipeline`` when the config
has it, else the val/test pipeline of the first task in ``data.val`` (``data.test``).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ...data import Pipeline
from ...data.outputs import OutputNames
from ...data.palette import voc_palette
from ...data.single_image import prepare_image
from ...registry import INFERENCERS

__all__ = ['infer_multitask', 'multitask_pipeline', 'branch_tasks']


def branch_tasks(model: torch.nn.Module, cfg: Mapping[str, Any]) -> dict[str, str]:
    """Branch name -> task kind (``'detection'`` | ``'segmentation'`` | ``'vqa'``), from the model config."""
    branches = (cfg.get('model') or {}).get('branches') or {}
    return {name: str(b.get('task')) for name, b in branches.items()}


def multitask_pipeline(cfg: Mapping[str, Any]) -> Pipeline:
    """``infer_cfg.pipeline``, else the first task's evaluation pipeline (``data.test``, else ``data.val``)."""
    pipeline = (cfg.get('infer_cfg') or {}).get('pipeline')
    if pipeline is None:
        data = cfg.get('data') or {}
        part = data.get('test') or data.get('val') or {}
        tasks = ((part.get('dataset') or {}).get('tasks')) or {}
        first = next(iter(tasks.values()), {}) if tasks else {}
        first = first[0] if isinstance(first, (list, tuple)) else first
        pipeline = first.get('pipeline') or []
    if isinstance(pipeline, Mapping):
        args = dict(pipeline)
        return Pipeline(list(args.pop('transforms', [])), **args)
    return Pipeline([dict(t) for t in pipeline])


def _vqa_inputs(meta: Mapping[str, Any], question: str, device: torch.device) -> dict[str, Any]:
    from ..vqa.text import build_tokenizer
    tokenizer = build_tokenizer(meta['tokenizer'], meta.get('question_vocab'))
    tokens = {k: v.to(device) for k, v in tokenizer([question]).items()}
    return {'questions': [question], 'question_ids': [0], 'image_index': torch.zeros(1, dtype=torch.long,
                                                                                       device=device), **tokens}


@torch.no_grad()
def infer_multitask(model: torch.nn.Module, cfg: Any, images: Sequence[str], out_dir: str,
                    question: str | None = None, score_thr: float = 0.3, alpha: float = 0.5) -> list[str]:
    """Run every branch of ``model`` on each image (one backbone pass) and draw all predictions on one picture.

    Args:
        model: a built ``MultiTaskModel`` (eval mode set here); ``metainfo['tasks']`` names classes / answers.
        cfg: the multi-task config (branch kinds from ``model.branches``; the pipeline, see the module docstring).
        images: image files.
        out_dir: destination folder (nothing is overwritten: ``_1``, ``_2``... suffixes).
        question: the question for a VQA branch (without one, VQA branches are not run).
        score_thr: boxes below this score are not drawn.
        alpha: mask opacity.

    Returns:
        The files written (a PNG and a JSON per image).
    """
    from ..detection.visualize import draw_detections
    from ..segmentation.visualize import blend_mask
    from ..vqa.visualize import overlay_attention
    model.eval()
    kinds = branch_tasks(model, cfg)
    metas = (getattr(model, 'metainfo', None) or {}).get('tasks') or {}
    vqa = [b for b, k in kinds.items() if k == 'vqa']
    if vqa and (not question or not question.strip()):
        print(f'no --question: the VQA branch {vqa[0]!r} is not run (attnkit infer CONFIG CKPT IMAGE --question '
              '"...")', file=sys.stderr)
        vqa = []
    pipeline = multitask_pipeline(cfg)
    device = next(model.parameters()).device
    names = OutputNames(out_dir, images)
    written: list[str] = []
    for path in images:
        image, batch = prepare_image(path, pipeline, device)
        if vqa:
            batch.update(_vqa_inputs(metas[vqa[0]], question.strip(), device))
        preds = model.predict_all(batch)
        zoom = max(1, 384 // max(image.shape[:2]))  # small images (the 128 px demo) are drawn larger
        picture = image.repeat(zoom, 0).repeat(zoom, 1) if zoom > 1 else image
        lines, record = [], {'image': path}
        for branch, kind in kinds.items():  # the mask first, boxes over it, the answer last
            if kind == 'segmentation' and branch in preds:
                meta = metas.get(branch) or {}
                palette = meta.get('palette') or voc_palette(len(meta.get('classes') or []) or 256)
                seg = preds[branch][0]['sem_seg'].cpu().numpy()
                picture = blend_mask(picture, seg.repeat(zoom, 0).repeat(zoom, 1), palette, alpha)
                present = [meta['classes'][c] for c in np.unique(seg).tolist()
                           if c < len(meta.get('classes') or [])]
                record[branch] = {'classes_present': present}
        for branch, kind in kinds.items():
            if kind == 'detection' and branch in preds:
                p = preds[branch][0]
                boxes, scores, labels = (p['boxes'].float().cpu().numpy(), p['scores'].float().cpu().numpy(),
                                         p['labels'].cpu().numpy())
                classes = list((metas.get(branch) or {}).get('classes') or [])
                picture = np.asarray(draw_detections(picture, boxes * zoom, labels, scores, classes,
                                                     score_thr=score_thr))
                record[branch] = [{'bbox_xyxy': [round(float(v), 2) for v in b], 'score': round(float(s), 4),
                                   'class': classes[int(c)] if int(c) < len(classes) else str(int(c))}
                                  for b, s, c in zip(boxes, scores, labels) if float(s) >= score_thr]
        for branch in vqa:
            if branch not in preds:
                continue
            p = preds[branch][0]
            answers = list(metas[branch]['answers'])
            top = [(answers[i], float(s)) for i, s in zip(p['answer_ids'].tolist(), p['scores'].tolist())]
            lines = [f'Q: {question.strip()}'] + [f'{k}. {a} ({s:.2f})' for k, (a, s) in enumerate(top, 1)]
            record[branch] = {'question': question.strip(), 'answers': [{'answer': a, 'score': round(s, 4)}
                                                                         for a, s in top]}
            print(f'{path}: {question.strip()} -> {top[0][0]} ({top[0][1]:.3f})' if top else path)
        stem = os.path.splitext(os.path.basename(path))[0]
        n = names.number(stem, ('_multitask.png', '_multitask.json'))
        png = names.claim(stem, '_multitask.png', n)
        overlay_attention(np.asarray(picture), None, png, lines)  # the picture with the answer lines under it
        js = names.claim(stem, '_multitask.json', n)
        with open(js, 'x') as f:
            json.dump(record, f, indent=1)
        written += [png, js]
    return written


INFERENCERS.register_module('MultiTaskModel', module=infer_multitask)
