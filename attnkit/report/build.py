"""``write_report``: gather a run's data, curves and galleries, and write the self-contained HTML page."""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from typing import Any, Mapping

from .data import PER_CLASS_FILE, RunData, read_run
from .html import Page, Picture, render
from .tables import per_class_from_metrics, per_class_table

__all__ = ['write_report', 'REPORT_FILE', 'TRAINING_DEFAULTS', 'report_options']

REPORT_FILE = 'report.html'
# what the Trainer draws at each evaluation (runtime.report=True); runtime.report=dict(...) overrides these keys
TRAINING_DEFAULTS = dict(gallery_images=8, show=3, attention_images=0)
CLI_DEFAULTS = dict(gallery_images=16, show=4, attention_images=2)


def report_options(setting: Any) -> dict[str, int] | None:
    """``runtime.report`` as write_report options: False/None -> None (no report), True -> TRAINING_DEFAULTS, a
    dict -> those keys over TRAINING_DEFAULTS (a ConfigError names an unknown key)."""
    from ..errors import ConfigError
    from ..registry import closest_names
    if setting is None or setting is False:
        return None
    if setting is True:
        return dict(TRAINING_DEFAULTS)
    if not isinstance(setting, Mapping):
        raise ConfigError(f'runtime.report must be True, False or a dict with keys {", ".join(TRAINING_DEFAULTS)}; '
                          f'got {setting!r}.')
    out = dict(TRAINING_DEFAULTS)
    for key, value in setting.items():
        if key not in TRAINING_DEFAULTS:
            close = closest_names(key, list(TRAINING_DEFAULTS))
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
            raise ConfigError(f'Unknown key runtime.report.{key}.{hint} Known: {", ".join(TRAINING_DEFAULTS)}.')
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f'runtime.report.{key} must be a whole number >= 0, got {value!r}.')
        out[key] = value
    return out


def _one_line(exc: BaseException) -> str:
    text = ' '.join(str(exc).split())
    return f'{type(exc).__name__}: {text[:240]}' if text else type(exc).__name__


def _load(run: RunData, device: Any) -> tuple[Any, Any]:
    """(cfg, model) from the work dir's config.py and checkpoint."""
    from ..config import load_config
    from ..engine import load_model
    cfg = load_config(os.path.join(run.work_dir, 'config.py'))
    model = load_model(cfg, run.checkpoint)
    return cfg, model.to(device) if device is not None else model


def _val_dataset(cfg: Any, model: Any) -> Any:
    from ..builder import build_dataset
    from ..errors import ConfigError
    data = cfg.get('data') or {}
    part = data.get('val') or data.get('test')
    if not part or not part.get('dataset'):
        raise ConfigError('the config has no data.val (or data.test) dataset')
    return build_dataset(part['dataset'], metainfo=getattr(model, 'metainfo', None))


def _galleries(page: Page, run: RunData, *, model: Any, cfg: Any, dataset: Any, gallery_images: int, show: int,
               attention_images: int, device: Any) -> None:
    """Fill the prediction and attention galleries of ``page``; anything that fails is named in ``page.missing``."""
    from .gallery import pick_best_worst, score_images, task_of
    if model is None:
        if not run.config_text or run.checkpoint is None:
            return  # read_run already said which is missing
        try:
            cfg, model = _load(run, device)
        except Exception as exc:  # noqa: BLE001 - the report still renders what exists
            page.missing.append(f'Could not load the model from {run.checkpoint} ({_one_line(exc)}): no galleries.')
            return
    task = task_of(cfg, model)
    if task is None:
        page.missing.append(f'No prediction gallery: no per-image score for model type {type(model).__name__} '
                            '(detection, segmentation and VQA models have one).')
        return
    try:
        dataset = dataset if dataset is not None else _val_dataset(cfg, model)
        scored = score_images(model, dataset, task, gallery_images)
    except Exception as exc:  # noqa: BLE001
        page.missing.append(f'No prediction gallery: running the model on the val set failed ({_one_line(exc)}).')
        return
    best, worst = pick_best_worst(scored, show)
    page.best = [Picture(s.png, f'{s.caption}', alt=f'best {s.index}') for s in best]
    page.worst = [Picture(s.png, f'{s.caption}', alt=f'worst {s.index}') for s in worst]
    page.predictions_note = (f'{task}: {len(scored)} of {len(dataset)} val samples scored (spread evenly over the set; '
                             'per-image score: docs/report.md); the best and the worst shown.')
    if attention_images > 0:
        _attention(page, model, cfg, task, [s for s in best + worst if s.file][:attention_images], device)


def _attention(page: Page, model: Any, cfg: Any, task: str, chosen: list, device: Any) -> None:
    try:
        from ..explain import explain_images
    except ImportError as exc:
        page.missing.append(f'No attention gallery: attnkit.explain is not available ({_one_line(exc)}).')
        return
    if not chosen:
        page.missing.append('No attention gallery: the val samples have no image files.')
        return
    questions = [s.question for s in chosen] if task == 'vqa' else None
    dev = str(device) if device is not None else str(next(model.parameters()).device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = explain_images(model, [s.file for s in chosen], tmp, task=task, questions=questions,
                                     device=dev, cfg=cfg, html=False)
            for s, result in zip(chosen, results):
                pics = []
                for view in result.get('views') or []:
                    with open(view['png'], 'rb') as f:
                        png = f.read()
                    label = str(view.get('title') or view.get('module') or '')
                    if view.get('kind') and str(view['kind']) not in label:
                        label += f" ({view['kind']})"
                    pics.append(Picture(png, label))
                notes = '; '.join(str(n) for n in result.get('notes') or [])
                heading = f"#{s.index}: {os.path.basename(str(result.get('image', s.file)))}"
                page.attention.append((heading + (f' ({notes})' if notes else ''), pics))
    except Exception as exc:  # noqa: BLE001
        page.attention = []
        page.missing.append(f'No attention gallery: attnkit explain failed ({_one_line(exc)}).')
        return
    page.attention_note = ('What every attention module looked at (and gradient saliency) for val images from the '
                           'galleries above.')


def write_report(work_dir: str, out: str | None = None, *, model: Any = None, cfg: Any = None, dataset: Any = None,
                 evaluator: Any = None, gallery_images: int = CLI_DEFAULTS['gallery_images'],
                 show: int = CLI_DEFAULTS['show'], attention_images: int = CLI_DEFAULTS['attention_images'],
                 device: Any = None, weights: str | None = None) -> str:
    """Write the report of the run in ``work_dir`` and return its path (default ``<work_dir>/report.html``).

    Args:
        work_dir: a Trainer's work dir (log.jsonl, config.py, checkpoints; any may be missing).
        out: the HTML file to write.
        model, cfg, dataset: the live model (eval mode is set and restored), its config and the val dataset (the
            Trainer passes them); when None they are loaded from the work dir's config.py and checkpoint.
        evaluator: the evaluator that just ran: its per-class table is saved as ``report/per_class.json`` so a
            later ``attnkit report`` shows it too.
        gallery_images: val images scored for the best/worst gallery (0: no gallery, no model is run).
        show: how many best and how many worst to show.
        attention_images: images of the gallery given to ``attnkit.explain`` (0: none).
        device: where a model loaded here runs (default: CPU).
        weights: what the galleries ran (default: the work dir's checkpoint file).
    """
    run = read_run(work_dir)
    out = os.path.abspath(out or os.path.join(run.work_dir, REPORT_FILE))
    final = run.final_metrics
    per_class = run.per_class
    if evaluator is not None:
        per_class = per_class_table(evaluator, final)
        if per_class is not None:
            _write_json(os.path.join(run.work_dir, PER_CLASS_FILE), per_class)
    if per_class is None:
        per_class = per_class_from_metrics(final)
    from .plots import curve_figures
    last = run.val[-1] if run.val else {}
    page = Page(title=f'attnkit report: {os.path.basename(run.work_dir)}',
                subtitle=(f'work dir {run.work_dir} · written {time.strftime("%Y-%m-%d %H:%M:%S")} · weights: '
                          + (weights or (os.path.basename(run.checkpoint) if run.checkpoint else 'none'))),
                missing=list(run.missing), metrics={k: v for k, v in final.items() if '.' not in k},
                metrics_caption=(f"evaluation at iteration {last.get('iter')} (epoch {last.get('epoch')}) on "
                                 f"{last.get('count', '?')} samples; {len(run.val)} evaluation(s) in the log"
                                 if last else ''),
                per_class=per_class, curves=curve_figures(run.train, run.val),
                interpretability=run.interpretability, config_text=run.config_text)
    if gallery_images > 0 and show > 0:
        _galleries(page, run, model=model, cfg=cfg, dataset=dataset, gallery_images=gallery_images, show=show,
                   attention_images=attention_images, device=device)
    text = render(page)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(tmp, out)
    return out


def _write_json(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path + '.tmp', 'w', encoding='utf-8') as f:
            json.dump(data, f, indent=1)
        os.replace(path + '.tmp', path)
    except OSError as exc:
        warnings.warn(f'Could not save the per-class table to {path}: {exc}')
