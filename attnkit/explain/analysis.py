"""Everything ``explain`` knows about one image: prediction, target, attention maps, rollout, gradient saliency.

Two forwards record the attention: one without a query (full self-attention matrices, for rollout, and the
prediction that picks the target), one with the target's centre as the query point. Every map is returned at
the ORIGINAL image size (the padding cropped, then resized bilinearly), so maps, ground truth and pictures share
one pixel grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..attention import record
from .hooks import record_grid_self_attention
from .maps import AttentionMap, attention_rollout, classify_maps, rollout_groups
from .metrics import resize_map
from .saliency import METHODS, cam_layers, gradient_saliency
from .scorer import TaskScorer
from .targets import Target, resolve_target

__all__ = ['Analysis', 'analyse', 'pipeline_for', 'to_image', 'ImageInput']


@dataclass
class ImageInput:
    """One image made ready for the model: the original (H0, W0, 3) uint8 and the collated batch of one."""
    image: np.ndarray
    batch: dict[str, Any]
    name: str
    question: str | None = None


@dataclass
class Analysis:
    """One image's explanation data (maps at the original size (H0, W0)).

    Attributes:
        pred: detection ``boxes/scores/labels`` numpy sorted by score; segmentation ``sem_seg``; VQA ``answer_ids``,
            ``scores``, ``attention_map``.
        target: the resolved :class:`~attnkit.explain.targets.Target`.
        maps: the recorded attention maps, sorted by kind (values at the module's resolution).
        spatial: ``{title: (map (H0, W0), module, kind, head)}`` for every spatial view (attention gates, each
            self-attention head and the head mean at the query point, rollout, VQA fusion attention).
        saliency: ``{'gradcam': (H0, W0), 'gradcam++': (H0, W0)}`` in [0, 1].
        point: the query pixel (y, x) of the self-attention maps.
        scorer: the :class:`TaskScorer` of this image (for deletion/insertion).
        lines: text describing the prediction (question and top answers for VQA).
    """
    inp: ImageInput
    pred: dict[str, Any]
    target: Target
    maps: list[AttentionMap]
    spatial: list[dict[str, Any]]
    saliency: dict[str, np.ndarray]
    point: tuple[int, int]
    scorer: TaskScorer
    lines: list[str] = field(default_factory=list)


def pipeline_for(task: str, cfg: Mapping[str, Any] | None) -> Any:
    """The evaluation pipeline ``attnkit infer`` uses for ``task`` (config's test/val, or the task's default)."""
    cfg = cfg or {}
    if task == 'detection':
        from ..tasks.detection.datasets.base import build_pipeline
        from ..tasks.detection.infer import test_pipeline_cfg
        return build_pipeline(test_pipeline_cfg(cfg))
    if task == 'segmentation':
        from ..tasks.segmentation.infer import test_pipeline
        return test_pipeline(cfg)
    from ..data import Pipeline
    from ..tasks.vqa.infer import eval_pipeline_cfg
    return Pipeline(eval_pipeline_cfg(cfg))


def to_image(amap: np.ndarray | Tensor, meta: Mapping[str, Any], pad: Sequence[int]) -> np.ndarray:
    """A (h, w) map over the padded input (``pad`` = (H', W')) -> (H0, W0) over the original image."""
    a = np.asarray(amap.float().cpu() if isinstance(amap, Tensor) else amap, np.float32)
    h, w = (int(v) for v in meta['img_size'])
    ah, aw = a.shape
    a = a[: max(1, round(ah * h / pad[0])), : max(1, round(aw * w / pad[1]))]
    return resize_map(a, tuple(int(v) for v in meta['ori_size']))


def _relative_query(point: tuple[int, int], meta: Mapping[str, Any], pad: Sequence[int]) -> tuple[float, float]:
    (h0, w0), (h, w) = meta['ori_size'], meta['img_size']
    return (min(1.0, (point[0] + 0.5) * h / h0 / pad[0]), min(1.0, (point[1] + 0.5) * w / w0 / pad[1]))


def _prediction(task: str, model: nn.Module, out: Any, inp: ImageInput, pad: Sequence[int]) -> dict[str, Any]:
    if task == 'detection':
        p = out[0]
        scores = p['scores'].float().cpu().numpy()
        order = np.argsort(-scores, kind='stable')
        return {'boxes': p['boxes'].float().cpu().numpy()[order], 'scores': scores[order],
                'labels': p['labels'].cpu().numpy()[order]}
    if task == 'segmentation':
        return {'sem_seg': out[0]['sem_seg'].cpu().numpy()}
    p = out[0]
    att = p['attention']
    att_map = to_image(att, inp.batch['metas'][0], pad) if att is not None else None
    return {'answer_ids': p['answer_ids'].tolist(), 'scores': p['scores'].tolist(), 'attention_map': att_map}


def class_names(model: nn.Module, task: str) -> list[str]:
    """Class names (detection, segmentation) or the answer vocabulary (VQA)."""
    if task == 'vqa':
        return list(model.answers)
    return [str(c) for c in (getattr(model, 'metainfo', None) or {}).get('classes') or []]


def analyse(model: nn.Module, task: str, inp: ImageInput, target: str | None = None,
            methods: Sequence[str] = METHODS, layers: Sequence[nn.Module] | None = None) -> Analysis:
    """Run the model on one prepared image and compute every map (see the module docstring).

    Args:
        model: the task model in eval mode.
        task: 'detection' | 'segmentation' | 'vqa'.
        inp: from :func:`attnkit.explain.run.prepare`.
        target: ``--target`` text or None (the task's default target).
        methods: gradient-saliency methods to run ('gradcam', 'gradcam++'); () for none.
        layers: the Grad-CAM layers (default :func:`~attnkit.explain.saliency.cam_layers`).
    """
    batch = inp.batch
    meta = batch['metas'][0]
    pad = tuple(batch['images'].shape[-2:])
    names = class_names(model, task)
    with torch.no_grad(), record(model) as full_maps, record_grid_self_attention(model) as grid_maps:
        out = model(batch)
    pred = _prediction(task, model, out, inp, pad)
    tgt = resolve_target(task, target, pred, meta, names)
    point = tgt.centre
    with torch.no_grad(), record(model, query=_relative_query(point, meta, pad)) as query_maps:
        model(batch)
    maps = classify_maps(dict(query_maps), dict(full_maps))
    del full_maps
    if grid_maps and out[0].get('attention') is not None:  # VQA: MCAN's grid self-attention, grid = attention's
        gh, gw = out[0]['attention'].shape[-2:]
        rel = _relative_query(point, meta, pad)
        qi = min(int(rel[0] * gh), gh - 1) * gw + min(int(rel[1] * gw), gw - 1)
        for name, full in grid_maps.items():
            full = full[0].float().cpu()
            maps.append(AttentionMap(name, 'self_attention', full[:, qi].reshape(-1, gh, gw), full))
    spatial = []
    for m in maps:
        if m.kind == 'attention':
            spatial.append({'title': f'{m.module}: spatial attention', 'map': to_image(m.value[0], meta, pad),
                            'module': m.module, 'kind': 'attention', 'head': None})
        elif m.kind == 'self_attention':
            heads = m.value.shape[0]
            spatial.append({'title': f'{m.module}: self-attention of the query point' +
                            (f' (mean of {heads} heads)' if heads > 1 else ''),
                            'map': to_image(m.value.mean(0), meta, pad), 'module': m.module,
                            'kind': 'self_attention', 'head': 'mean' if heads > 1 else None})
            if heads > 1:
                for h in range(heads):
                    spatial.append({'title': f'{m.module}: head {h} of {heads}', 'map': to_image(m.value[h], meta, pad),
                                    'module': m.module, 'kind': 'self_attention', 'head': h})
    for group in rollout_groups(maps):
        hw = group[0].value.shape[-2:]
        rel = _relative_query(point, meta, pad)
        qi = min(int(rel[0] * hw[0]), hw[0] - 1) * hw[1] + min(int(rel[1] * hw[1]), hw[1] - 1)
        roll = attention_rollout([g.full for g in group])[qi].view(*hw)
        spatial.append({'title': f'rollout over {len(group)} self-attention layers ({group[0].module} ... '
                        f'{group[-1].module})', 'map': to_image(roll, meta, pad), 'module': None,
                        'kind': 'rollout', 'head': None, 'modules': [g.module for g in group]})
    if task == 'vqa' and pred.get('attention_map') is not None:
        spatial.append({'title': 'fusion head: question-guided attention over the grid', 'map': pred['attention_map'],
                        'module': 'head', 'kind': 'fusion_attention', 'head': None})
    tokens = None
    if task == 'vqa':
        tokens = {k: batch[k][:1] for k in ('input_ids', 'attention_mask')}
    scorer = TaskScorer(model, task, pad, meta['img_size'], tokens)
    saliency = {}
    if methods:
        x = batch['images'].float()
        if layers is None:
            layers = [m for _, m in cam_layers(model, task, scorer.normalize(x))]
        with torch.enable_grad():
            raw = gradient_saliency(scorer, x, tgt.make(scorer, False), layers, methods)
        saliency = {k: to_image(v, meta, pad) for k, v in raw.items()}
    lines = _lines(task, pred, names, inp.question, tgt)
    return Analysis(inp, pred, tgt, maps, spatial, saliency, point, scorer, lines)


def _lines(task: str, pred: Mapping[str, Any], names: Sequence[str], question: str | None, tgt: Target) -> list[str]:
    if task == 'vqa':
        answers = ', '.join(f'{names[i]} {s:.2f}' for i, s in zip(pred['answer_ids'][:5], pred['scores'][:5]))
        return [f'Q: {question}', f'A: {answers}', f'target: {tgt.title}']
    if task == 'detection':
        return [f'{len(pred["boxes"])} detections; target: {tgt.title}']
    return [f'target: {tgt.title}']
