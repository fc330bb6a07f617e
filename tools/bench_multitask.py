#!/usr/bin/env python
"""Inference time of all three heads on one image: the multi-task model (ONE backbone pass, ``predict_all``)
against the three single-task demo models run one after the other on the same image.

    python tools/bench_multitask.py                       # the demo configs, weights from work_dirs/ when there
    python tools/bench_multitask.py --images 20 --repeats 5 --threads 2 --out work_dirs/bench_multitask.json
    python tools/bench_multitask.py --multitask CONFIG CKPT --single DET_CFG DET_CKPT SEG_CFG SEG_CKPT VQA_CFG VQA_CKPT
    python tools/bench_multitask.py --fast               # all four models on the inference fast path
    python tools/bench_multitask.py --train-steps 4      # training compute estimate instead (see below)

Every model gets the batch its own ``attnkit infer`` builds (the config's test pipeline, one image, the question
tokens for VQA). A checkpoint given as ``-`` (or missing on disk) means random weights: time does not depend on the
weights much, except detection post-processing (an untrained head keeps more boxes for NMS), so pass trained
checkpoints for the reported figure. Models are timed interleaved (``--repeats`` rounds over ``--images`` demo val
images, after ``--warmup`` images), median per image. Target (issue 15): multi-task <= 0.5 x the three models.
Also prints the parameter counts (one backbone against three).

``--train-steps N``: times N training steps (forward, backward, AdamW step; random weights) of each single-task demo
on its first training batch and of the multi-task demo on one batch of each task, and estimates the training
compute of the schedules: singles = sum of iterations x step time (det 630, seg 1200, VQA 1580 iterations; the VQA
stage-1 pre-training not counted), multi-task = max_iters x sum_t p_t x step_t. Data loading and evaluations are
not counted: the full runs (docs/multitask.md) give the real figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import torch  # noqa: E402

DEMO_MULTI = ('configs/demo/multitask_r18_shapes.py', 'work_dirs/multitask_r18_shapes/model.safetensors')
DEMO_SINGLE = ('configs/demo/fcos_r18-cbam_fpn_shapes.py', 'work_dirs/fcos_r18-cbam_fpn_shapes/model.safetensors',
               'configs/demo/danet_r18-d8_shapes.py', 'work_dirs/danet_r18-d8_shapes/model.safetensors',
               'configs/demo/mcan_r18_gru_shapes.py', 'work_dirs/mcan_r18_gru_shapes/model.safetensors')
QUESTION = 'what color is the circle?'


def load(config: str, checkpoint: str | None) -> tuple[Any, torch.nn.Module, str]:
    """(cfg, model in eval mode, where the weights came from)."""
    from attnkit.builder import build_dataset, build_model
    from attnkit.config import load_config
    from attnkit.engine import load_model
    from attnkit.engine.checkpoint import skip_backbone_weights
    cfg = load_config(config)
    if checkpoint and checkpoint != '-' and os.path.isfile(checkpoint):
        return cfg, load_model(cfg, checkpoint), checkpoint
    meta = build_dataset(cfg.data.train.dataset).metainfo  # classes / vocabularies of the training split
    # random weights: no pre-training file is read, the structure it implies is kept (as load_model does)
    return cfg, build_model(skip_backbone_weights(cfg.model), metainfo=meta).eval(), 'random weights'


def make_batch(model: torch.nn.Module, cfg: Any, image: str) -> dict[str, Any]:
    """The batch ``attnkit infer`` gives ``model`` for ``image`` (with the question for VQA)."""
    from attnkit.data import Pipeline
    from attnkit.data.single_image import prepare_image
    kind = cfg.model.type
    if kind == 'MultiTaskModel':
        from attnkit.tasks.multitask.infer import _vqa_inputs, branch_tasks, multitask_pipeline
        _, batch = prepare_image(image, multitask_pipeline(cfg))
        vqa = [b for b, k in branch_tasks(model, cfg).items() if k == 'vqa']
        if vqa:
            batch.update(_vqa_inputs(model.metainfo['tasks'][vqa[0]], QUESTION, torch.device('cpu')))
        return batch
    if kind == 'VQAModel':
        from attnkit.tasks.multitask.infer import _vqa_inputs
        from attnkit.tasks.vqa.infer import eval_pipeline_cfg
        _, batch = prepare_image(image, Pipeline(eval_pipeline_cfg(cfg)))
        batch.update(_vqa_inputs(model.metainfo, QUESTION, torch.device('cpu')))
        return batch
    if kind == 'Segmentor':
        from attnkit.tasks.segmentation.infer import test_pipeline
        return prepare_image(image, test_pipeline(cfg))[1]
    from attnkit.tasks.detection.datasets.base import build_pipeline
    from attnkit.tasks.detection.infer import test_pipeline_cfg
    return prepare_image(image, build_pipeline(test_pipeline_cfg(cfg)))[1]


SINGLE_ITERS = {'det': 630, 'seg': 1200, 'vqa': 1580}  # the single-task demos' schedules


def train_step_times(runs: dict[str, tuple[torch.nn.Module, dict[str, Any]]], steps: int) -> dict[str, float]:
    """Median seconds of one training step (forward, backward, AdamW step) of each ``name: (model, batch)``, timed
    interleaved (one step of each in turn, so load changes hit all alike) after one untimed step each."""
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, (m, _) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(steps + 1):
        for name, (model, batch) in runs.items():
            model.train()
            t = time.perf_counter()
            model(batch)['loss'].backward()
            opts[name].step()
            opts[name].zero_grad()
            if i:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def train_estimate(args: argparse.Namespace) -> dict[str, Any]:
    """Training compute of the single-task demo schedules against the multi-task one (see the docstring)."""
    from attnkit.builder import build_dataset, build_model
    from attnkit.config import load_config
    from attnkit.engine.data import ShardedBatchSampler, collate_fn_of
    from attnkit.engine.multitask import build_task_sampler
    runs: dict[str, tuple[torch.nn.Module, dict[str, Any]]] = {}
    for task, path in zip(('det', 'seg', 'vqa'), args.single[0::2]):
        cfg = load_config(path)
        if cfg.model.backbone.get('pretrained'):
            cfg.model.backbone.pretrained = None
        train = cfg.data.train
        ds = build_dataset(train.dataset)
        groups = ds.group_keys(train.group_by) if train.get('group_by') else None
        idx = next(iter(ShardedBatchSampler(len(ds), int(train.batch_size), groups=groups)))
        items = ds.__getitems__(idx) if hasattr(ds, '__getitems__') else [ds[i] for i in idx]
        runs[f'single/{task}'] = (build_model(cfg.model, metainfo=ds.metainfo), collate_fn_of(ds)(items))
    cfg = load_config(args.multitask[0])
    ds = build_dataset(cfg.data.train.dataset)
    model = build_model(cfg.model, metainfo=ds.metainfo)
    sampler = build_task_sampler(ds, cfg.data.train, 1, 0, int((cfg.get('runtime') or {}).get('seed', 0)))
    batches: dict[str, Any] = {}
    for task, idx in sampler.global_batches():
        batches.setdefault(task, idx)
    for task, idx in batches.items():
        runs[f'multi/{task}'] = (model, ds.collate(ds.__getitems__(idx)))
    step = train_step_times(runs, args.train_steps)
    single = sum(SINGLE_ITERS[t] * step[f'single/{t}'] for t in SINGLE_ITERS)
    iters = int(cfg.schedule.max_iters)
    multi = iters * sum(p * step[f'multi/{t}'] for t, p in sampler.probabilities.items())
    for name, value in step.items():
        print(f'{name:<13} {value:7.3f} s/step')
    print(f'training compute: three single-task demos {single / 60:.1f} min, multi-task {multi / 60:.1f} min '
          f'({iters} iterations, mix {", ".join(f"{t} {p:.2f}" for t, p in sampler.probabilities.items())}), '
          f'ratio {multi / single:.2f} (target <= 1)')
    return {'s_per_step': step, 'single_min': single / 60, 'multi_min': multi / 60, 'ratio': multi / single,
            'threads': torch.get_num_threads()}


def run(model: torch.nn.Module, batch: dict[str, Any]) -> Any:
    return model.predict_all(batch) if hasattr(model, 'predict_all') else model(batch)


def main(argv: list[str] | None = None) -> int:
    from attnkit.deploy import FAST_DTYPES
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--multitask', nargs=2, default=list(DEMO_MULTI), metavar=('CONFIG', 'CKPT'))
    parser.add_argument('--single', nargs=6, default=list(DEMO_SINGLE), metavar='CFG_OR_CKPT',
                        help='three (config, checkpoint) pairs: detection, segmentation, VQA')
    parser.add_argument('--image-dir', default='data/demo/voc/JPEGImages')
    parser.add_argument('--images', type=int, default=20, help='demo val images timed per round')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: leave as is)')
    parser.add_argument('--train-steps', type=int, default=0,
                        help='estimate the training compute from N timed steps per model instead')
    parser.add_argument('--fast', action='store_true',
                        help='time every model on the inference fast path (attnkit.deploy.prepare_fast)')
    parser.add_argument('--fast-dtype', choices=tuple(FAST_DTYPES), default='auto',
                        help="with --fast: bf16 where the CPU has bf16 units ('auto'), or forced")
    parser.add_argument('--out', help='write the figures as JSON here')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_steps:
        result = train_estimate(args)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, 'w') as f:
                json.dump(result, f, indent=2)
        return 0
    names = sorted(f for f in os.listdir(args.image_dir) if f.endswith('.jpg'))
    val = [n for n in names if n >= '001001.jpg'] or names  # the demo val images follow the 1000 train images
    images = [os.path.join(args.image_dir, n) for n in val[:args.images]]
    models = {'multitask': load(*args.multitask)}
    for name, k in zip(('detection', 'segmentation', 'vqa'), range(0, 6, 2)):
        models[name] = load(args.single[k], args.single[k + 1])
    for name, (_, _, source) in models.items():
        print(f'{name:<13} {source}', file=sys.stderr)
    if args.fast:  # the same fast path for all four models
        from attnkit.deploy import prepare_fast
        for name, (cfg, m, source) in models.items():
            fast, report = prepare_fast(m, bf16=FAST_DTYPES[args.fast_dtype])
            models[name] = (cfg, fast, source)
            print(f'{name:<13} {report.summary()}', file=sys.stderr)
    batches = {name: [make_batch(m, cfg, img) for img in images] for name, (cfg, m, _) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, (_, m, _) in models.items():
            for b in batches[name][:args.warmup]:
                run(m, b)
        for _ in range(args.repeats):
            for i in range(len(images)):
                for name, (_, m, _) in models.items():  # interleaved: load changes hit all models alike
                    t = time.perf_counter()
                    run(m, batches[name][i])
                    times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) * 1000 for name, v in times.items()}
    three = med['detection'] + med['segmentation'] + med['vqa']
    params = {name: sum(p.numel() for p in m.parameters()) for name, (_, m, _) in models.items()}
    result = {'ms_per_image': med, 'three_single_ms': three, 'ratio': med['multitask'] / three,
              'params': params, 'params_three_single': sum(params[n] for n in ('detection', 'segmentation', 'vqa')),
              'images': len(images), 'repeats': args.repeats, 'threads': torch.get_num_threads(),
              'weights': {name: src for name, (_, _, src) in models.items()},
              'fast': args.fast, 'fast_dtype': args.fast_dtype if args.fast else None}
    for name in models:
        print(f'{name:<13} {med[name]:8.2f} ms/image   {params[name] / 1e6:6.2f} M params')
    print(f"three single-task models {three:8.2f} ms/image   {result['params_three_single'] / 1e6:6.2f} M params")
    print(f"multi-task / three single = {result['ratio']:.3f}  (target <= 0.5)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
