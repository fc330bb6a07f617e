"""``explain_images``: one PNG per view of every image and one self-contained HTML page.

::

    model, cfg = load_for_explain('configs/demo/fcos_r18-cbam_fpn_shapes.py', 'work_dirs/.../latest.pth')
    results = explain_images(model, ['a.jpg'], 'explain_out', task='detection', cfg=cfg)
    results[0]['views'][0]   # {'title', 'png', 'module', 'kind'}
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from . import figures
from .analysis import Analysis, ImageInput, analyse, class_names, pipeline_for
from .page import write_page
from .saliency import METHODS

__all__ = ['explain_images', 'load_for_explain', 'prepare', 'render_views']

NO_ATTENTION = 'No attention module was found in this model: only gradient saliency is shown.'


def load_for_explain(config: str, checkpoint: str, cfg_options: Mapping[str, Any] | None = None,
                     device: str | torch.device = 'cpu') -> tuple[nn.Module, Any]:
    """Build the model of ``config`` with ``checkpoint``'s weights, as ``attnkit infer`` does.

    Returns:
        (model in eval mode on ``device``, the loaded config).
    """
    from ..cli import _load_cfg
    from ..engine import load_model
    from ..engine.utils import resolve_device
    cfg = _load_cfg(config, dict(cfg_options) if cfg_options else None)
    model = load_model(cfg, checkpoint).to(resolve_device(str(device)))
    return model.eval(), cfg


def prepare(model: nn.Module, task: str, path: str, pipeline: Any, question: str | None = None) -> ImageInput:
    """Read ``path`` (one-line DataError when unreadable), run the pipeline, collate a batch of one on the model's
    device; for VQA, tokenise ``question`` into the batch."""
    from ..data.single_image import prepare_image
    device = next(model.parameters()).device
    image, batch = prepare_image(path, pipeline, device)
    if task == 'vqa':
        _add_question(model, batch, question)
    return ImageInput(image, batch, os.path.splitext(os.path.basename(path))[0], question)


def _add_question(model: nn.Module, batch: dict[str, Any], question: str | None) -> None:
    """Tokenise ``question`` with the model's tokenizer into ``batch`` (``input_ids``, ``attention_mask``)."""
    if not question or not question.strip():
        raise ConfigError('Explaining a VQA model needs a question: attnkit explain CONFIG CKPT IMAGE '
                          '--question "..."')
    from ..tasks.vqa.text import build_tokenizer
    device = batch['images'].device
    tokenizer = build_tokenizer(model.metainfo['tokenizer'], model.metainfo.get('question_vocab'))
    batch.update({k: v.to(device) for k, v in tokenizer([question.strip()]).items()})
    batch['question_ids'] = [0]


def _prediction_png(task: str, a: Analysis, names: Sequence[str], path: Path) -> Path:
    image = a.inp.image
    if task == 'detection':
        from ..tasks.detection.visualize import draw_detections
        from PIL import Image
        scale = max(1, 384 // max(image.shape[:2]))  # draw at the figure's size: captions stay small on small images
        big = np.asarray(Image.fromarray(image).resize((image.shape[1] * scale, image.shape[0] * scale),
                                                       Image.BILINEAR))
        drawn = draw_detections(big, a.pred['boxes'] * scale, a.pred['labels'], a.pred['scores'], names,
                                score_thr=0.3)
        return figures.note_png(path, np.asarray(drawn), 'detections (score >= 0.3)', a.lines)
    if task == 'segmentation':
        from ..data.palette import voc_palette
        from ..tasks.segmentation.visualize import blend_mask
        palette = (a.scorer.model.metainfo or {}).get('palette') or voc_palette(max(2, len(names)))
        seg = a.pred['sem_seg']
        legend = ', '.join(f'{names[c]}' for c in np.unique(seg) if 0 <= c < len(names))
        return figures.note_png(path, blend_mask(image, seg, palette), f'segmentation: {legend}', a.lines)
    return figures.note_png(path, image, 'VQA', a.lines)


def render_views(task: str, a: Analysis, names: Sequence[str], folder: Path) -> list[dict[str, Any]]:
    """Write one PNG per view of ``a`` into ``folder``; returns the views (``title``, ``png``, ``module``,
    ``kind``, ``head``)."""
    folder.mkdir(parents=True, exist_ok=True)
    views: list[dict[str, Any]] = []

    def add(title: str, kind: str, module: str | None, writer: Any, head: Any = None) -> None:
        slug = (module or kind).replace('.', '_').replace('/', '_')
        png = folder / f'{len(views):02d}_{kind}_{slug}{"" if head is None else f"_{head}"}.png'
        writer(png)
        views.append({'title': title, 'png': png, 'module': module, 'kind': kind, 'head': head})

    img, tgt = a.inp.image, a.target
    add(f'prediction; target {tgt.title}', 'prediction', None, lambda p: _prediction_png(task, a, names, p))
    lines = a.lines if task == 'vqa' else ()
    by_module: dict[str, list[Any]] = {}
    for s in a.spatial:
        by_module.setdefault(s['module'] or s['kind'], []).append(('spatial', s))
    for m in a.maps:
        if m.kind in ('channel', 'channel_affinity'):
            base = m.module[: -len('.channel')] if m.module.endswith('.channel') else m.module
            by_module.setdefault(base, []).append(('channel', m))
    for entries in by_module.values():
        for what, s in entries:
            if what == 'spatial':
                point = a.point if s['kind'] in ('self_attention', 'rollout') else None
                add(s['title'], s['kind'], s['module'],
                    lambda p, s=s, point=point: figures.heatmap_png(p, img, s['map'], s['title'], point=point,
                                                                    box=tgt.box, lines=lines,
                                                                    label='attention weight'), s['head'])
            elif s.kind == 'channel':
                add(f'{s.module}: channel attention (ranked)', 'channel', s.module,
                    lambda p, m=s: figures.channel_png(p, m.value.numpy(), f'{m.module}: channel weights, ranked'))
            else:
                add(f'{s.module}: channel affinity', 'channel_affinity', s.module,
                    lambda p, m=s: figures.matrix_png(p, m.value.numpy(), f'{m.module}: channel-channel attention'))
    for method, smap in a.saliency.items():
        title = f'{"Grad-CAM++" if method == "gradcam++" else "Grad-CAM"} of {tgt.title}'
        add(title, method, None, lambda p, smap=smap, title=title: figures.heatmap_png(
            p, img, smap, title, box=tgt.box, lines=lines, label='saliency (normalised)'))
    return views


def _fresh(path: Path) -> Path:
    """``path`` or the first of ``path_1``, ``path_2``... that does not exist (nothing is overwritten)."""
    if not path.exists():
        return path
    for i in range(1, 10000):
        candidate = path.with_name(f'{path.stem}_{i}{path.suffix}')
        if not candidate.exists():
            return candidate
    raise ConfigError(f'No free output name next to {str(path)!r}.')


def _explain_all(model: nn.Module, images: list[str], out_dir: str | Path, task: str, questions: list[str] | None,
                 target: str | None, cfg: Mapping[str, Any] | None, methods: Sequence[str]) -> list[dict[str, Any]]:
    pipeline = pipeline_for(task, cfg)
    names = class_names(model, task)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f'--out {str(out_dir)!r} is a file; explain writes its pictures into a folder.')
    inputs = []
    for i, path in enumerate(images):  # read every image first: a bad one fails before any work
        q = None if questions is None else questions[0 if len(questions) == 1 else i]
        inputs.append((path, prepare(model, task, path, pipeline, q)))
    results = []
    for path, inp in inputs:
        start, cpu = time.perf_counter(), time.process_time()
        a = analyse(model, task, inp, target, methods)
        folder = _fresh(out_dir / inp.name)
        views = render_views(task, a, names, folder)
        notes = [] if a.maps or any(s['kind'] == 'fusion_attention' for s in a.spatial) else [NO_ATTENTION]
        results.append({'image': path, 'html': None, 'views': views, 'notes': notes, 'target': a.target.spec,
                        'seconds': round(time.perf_counter() - start, 3),
                        'cpu_seconds': round(time.process_time() - cpu, 3)})
    return results


def explain_images(model: nn.Module, images: list[str], out_dir: str | Path, *, task: str,
                   questions: list[str] | None = None, target: str | None = None, device: str | None = 'cpu',
                   cfg: Mapping[str, Any] | None = None, html: bool = True,
                   methods: Sequence[str] = METHODS) -> list[dict[str, Any]]:
    """Explain one prediction per image: every attention module's map, rollout, Grad-CAM and Grad-CAM++.

    Args:
        model: a built Detector / Segmentor / VQAModel (moved to ``device``, eval mode set here).
        images: image files.
        out_dir: destination; each image's PNGs go into ``out_dir/<image stem>/`` and the page is
            ``out_dir/explain.html`` (``_1``, ``_2``... when the name exists: nothing is overwritten).
        task: 'detection' | 'segmentation' | 'vqa'.
        questions: VQA: one question for all images, or one per image.
        target: ``box:K`` | ``class:NAME`` | ``pixel:Y,X`` | ``answer:TEXT`` (default: the top box, the largest
            predicted class, the top answer).
        device: where the model runs (None: where it is); the model is moved back and its train/eval mode
            restored afterwards.
        cfg: the config (its test/val pipeline); None: no resize for detection/segmentation, the VQA default.
        html: write the page.
        methods: gradient-saliency methods.

    Returns:
        Per image ``{'image', 'html', 'views': [{'title', 'png', 'module', 'kind', 'head'}], 'notes', 'target',
        'seconds', 'cpu_seconds'}`` (wall and process CPU time of the image's analysis and pictures).
    """
    if questions is not None and len(questions) not in (1, len(images)):
        raise ConfigError(f'explain: {len(questions)} questions for {len(images)} images; give one for all or one '
                          'per image.')
    out_dir = Path(out_dir)
    was_training = model.training
    home = next(model.parameters()).device
    if device is not None:
        model.to(torch.device(device))
    model.eval()
    try:
        results = _explain_all(model, images, out_dir, task, questions, target, cfg, methods)
    finally:  # a model lent by a training run goes back as it came (device, train mode)
        model.to(home).train(was_training)
    if html and results:
        page = _fresh(out_dir / 'explain.html')
        write_page(page, results, f'attnkit explain: {type(model).__name__} ({task})',
                   [f'target: {target or "default (top box / largest class / top answer)"}'])
        for r in results:
            r['html'] = page
    return results
