"""``make demo`` / ``attnkit demo``: the whole toolkit on the embedded shapes data, with no download.

Generates the demo data once (cached under ``data/demo``), then for each task trains its demo config,
evaluates it on the demo validation split and writes pictures of a few predictions:

=============  ======================================  ==================================
task           config                                  target on the demo val split
=============  ======================================  ==================================
detection      configs/demo/fcos_r18-cbam_fpn_shapes.py COCO mAP@[.5:.95] >= 0.50
segmentation   configs/demo/danet_r18-d8_shapes.py     mIoU >= 0.80
vqa backbone   configs/demo/fcn_r18_shapes_vqa-backbone.py  (stage 1 of vqa: backbone pre-training)
vqa            configs/demo/mcan_r18_gru_shapes.py     VQA accuracy >= 0.90
vqa baseline   configs/demo/qonly_gru_shapes.py        (question only, for comparison)
=============  ======================================  ==================================

``--quick`` trains each model for 20 iterations only (a set-up check in a few minutes, into
``work_dirs/demo-quick/``; the figures mean nothing). Everything goes under ``work_dirs/demo/<config name>/``
(checkpoints, ``log.jsonl``, ``metrics.json``, ``pictures/``, ``report.html``: the page of ``attnkit report``, its
path printed). A task whose ``metrics.json`` exists is not trained again unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

DEMOS = {
    'detection': ('configs/demo/fcos_r18-cbam_fpn_shapes.py', 'AP', 0.50),
    'segmentation': ('configs/demo/danet_r18-d8_shapes.py', 'mIoU', 0.80),
    'vqa-backbone': ('configs/demo/fcn_r18_shapes_vqa-backbone.py', 'mIoU', None),
    'vqa': ('configs/demo/mcan_r18_gru_shapes.py', 'accuracy', 0.90),
    'vqa-question-only': ('configs/demo/qonly_gru_shapes.py', 'accuracy', None),
}

# task -> (the task that must run first, the config key that receives its model.safetensors)
DEPENDS = {'vqa': ('vqa-backbone', 'model.backbone.pretrained')}


def _work_dir(task: str, quick: bool) -> Path:
    return Path('work_dirs/demo-quick' if quick else 'work_dirs/demo') / Path(DEMOS[task][0]).stem


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _pictures(cfg, model, out_dir: Path, num: int) -> list[str]:
    """Run the task's inferencer on the first ``num`` demo validation images."""
    from .registry import INFERENCERS, get_registered

    data_root = Path('data/demo')
    names = (data_root / 'voc/ImageSets/Main/val.txt').read_text().split()[:num]
    images = [str(data_root / 'voc/JPEGImages' / f'{n}.jpg') for n in names]
    infer = get_registered(INFERENCERS, cfg.model.type)
    question = None
    if cfg.get('task') == 'vqa':
        questions = json.loads((data_root / 'vqa/v2_OpenEnded_mscoco_val_questions.json').read_text())['questions']
        first = {}
        for q in questions:
            first.setdefault(q['image_id'], q['question'])
        question = first.get(int(names[0]), 'how many objects are there?')
        images = images[:1]
    return list(infer(model, cfg, images, str(out_dir), question=question))


def _report(task: str, work_dir: Path) -> str | None:
    """Write ``<work_dir>/report.html`` (curves, tables, best/worst val predictions, the attention gallery of two
    images) and print its path; a failure is printed and the demo goes on."""
    from .report import write_report
    try:
        path = write_report(str(work_dir), gallery_images=16, show=4, attention_images=2)
    except Exception as exc:  # noqa: BLE001 - the demo's models and metrics stand without the page
        print(f'[{task}] report not written: {type(exc).__name__}: {exc}')
        return None
    print(f'[{task}] report: {os.path.abspath(path)}')
    return path


QUICK_OPTIONS = {'schedule.by_epoch': False, 'schedule.max_epochs': None, 'schedule.max_iters': 20,
                 'schedule.warmup_iters': 5, 'train_cfg.eval_interval': 20, 'train_cfg.checkpoint_interval': 20}


def run_demo(task: str, *, force: bool = False, pictures: int = 3, quick: bool = False) -> dict:
    """Train, evaluate and draw one demo task; returns its metrics (read back when cached)."""
    from .config import load_config
    from .engine import Trainer, load_model

    config, key, target = DEMOS[task]
    options = dict(QUICK_OPTIONS) if quick else {}
    if task in DEPENDS:  # e.g. vqa starts from the backbone that vqa-backbone trained
        first, option = DEPENDS[task]
        weights = _work_dir(first, quick) / 'model.safetensors'
        if not weights.is_file():  # trained by the task list already, or now
            run_demo(first, pictures=0, quick=quick)
        options[option] = str(weights)
    cfg = load_config(config, options or None)
    work_dir = _work_dir(task, quick)
    metrics_file = work_dir / 'metrics.json'
    if metrics_file.is_file() and not force and not quick:
        print(f'[{task}] cached: {metrics_file} (use --force to train again)')
        if not (work_dir / 'report.html').is_file():
            _report(task, work_dir)
        else:
            print(f'[{task}] report: {(work_dir / "report.html").resolve()}')
        return json.loads(metrics_file.read_text())
    start = time.time()
    trainer = Trainer(cfg, work_dir=str(work_dir))
    metrics = dict(trainer.train())
    metrics['train_minutes'] = round((time.time() - start) / 60, 2)
    metrics_file.write_text(json.dumps(metrics, indent=2))
    if pictures and trainer.is_main_process:
        model = load_model(cfg, str(work_dir / 'model.safetensors'))
        files = _pictures(cfg, model, work_dir / 'pictures', pictures)
        print(f'[{task}] pictures: ' + ', '.join(files))
    if trainer.is_main_process:
        _report(task, work_dir)
    shown = metrics.get(key)
    if quick:
        verdict = ' (quick set-up check: 20 iterations, not a result)'
    elif target is None or shown is None:
        verdict = ''
    else:
        verdict = f" (target >= {target:.2f}: {'met' if shown >= target else 'NOT met'})"
    print(f'[{task}] {key} = {shown}{verdict}, trained in {metrics["train_minutes"]} min')
    return metrics


def print_summary(config: str) -> None:
    """Build a config's model (classes / vocabularies from its training set) and print its parameters per part."""
    from . import build_dataset, build_model
    from .config import load_config
    from .summary import parameter_table

    cfg = load_config(config)
    metainfo = build_dataset(cfg.data.train.dataset).metainfo
    model = build_model(cfg.model, metainfo=metainfo)
    print(f'{config}: {type(model).__name__}')
    print(parameter_table(model))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='attnkit demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', default='detection,segmentation,vqa-backbone,vqa,vqa-question-only',
                        help='comma-separated subset of: ' + ', '.join(DEMOS))
    parser.add_argument('--force', action='store_true', help='train again even when results exist')
    parser.add_argument('--pictures', type=int, default=3, help='how many validation images to draw')
    parser.add_argument('--quick', action='store_true', help='20 iterations per model: checks the set-up only')
    parser.add_argument('--summary', metavar='CONFIG', help='only print the parameter table of CONFIG')
    args = parser.parse_args(argv)
    os.chdir(_repo_root())
    from .data.demo import generate_demo_data

    generate_demo_data('data/demo')
    if args.summary:
        print_summary(args.summary)
        return 0
    results = {}
    for task in [t.strip() for t in args.tasks.split(',') if t.strip()]:
        if task not in DEMOS:
            print(f'error: unknown demo task {task!r}; choose from {", ".join(DEMOS)}', file=sys.stderr)
            return 2
        results[task] = run_demo(task, force=args.force, pictures=args.pictures, quick=args.quick)
    print('\nDemo results (demo validation split):')
    for task, metrics in results.items():
        config, key, target = DEMOS[task]
        tgt = f'>= {target:.2f}' if target is not None else 'baseline'
        print(f'  {task:<20} {key:<9} {metrics.get(key, float("nan")):.4f}   target {tgt:<9} '
              f'({metrics.get("train_minutes", "?")} min)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
