"""Time one VQA training step (forward + backward + AdamW) for a batch layout: what the backbone and the head cost.

    OMP_NUM_THREADS=1 python tools/vqa_step_cost.py CONFIG --img-size 128 --batch 64 --max-per-group 2
    OMP_NUM_THREADS=1 python tools/vqa_step_cost.py CONFIG --img-size 128 --batch 320     # image-grouped

Batches come from the config's training set through the Trainer's samplers (``--max-per-group`` as
``data.train.max_per_group``; without it, batches group all questions of an image), the model is the config's,
in training mode, in the layout the Trainer would use (``runtime.channels_last``). Prints the median step time over ``--steps`` (after 2 warm-up steps) and the mean
number of distinct images per step. Two layouts with the same images per step and different questions per step
give the head's cost per question (docs/bench/vqa.md, "Cheaper or stronger variants").
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('--img-size', type=int, default=None, help='resize the last pipeline step to this size')
    parser.add_argument('--batch', type=int, default=64, help='questions per step')
    parser.add_argument('--max-per-group', type=int, default=None, help='questions of one image per step')
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    from attnkit.builder import build_dataset, build_model
    from attnkit.config import load_config
    from attnkit.engine.data import build_train_loader
    from attnkit.engine.question_sampler import build_batch_sampler
    from attnkit.engine.utils import training_channels_last

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    dataset_cfg = cfg['data']['train']['dataset']
    if args.img_size:
        dataset_cfg['pipeline'][-1].update(height=args.img_size, width=args.img_size)
    dataset = build_dataset(dataset_cfg)
    model = build_model(cfg['model'], metainfo=dataset.metainfo).train()
    if training_channels_last((cfg.get('runtime') or {}).get('channels_last', 'auto'), torch.device('cpu'), model):
        model.to(memory_format=torch.channels_last)  # as the Trainer does
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    sampler = build_batch_sampler(len(dataset), args.batch, groups=dataset.group_keys('image'),
                                  max_per_group=args.max_per_group, drop_last=True)
    times, images = [], []
    for i, batch in enumerate(build_train_loader(dataset, sampler, 0, 0, 0)):
        start = time.perf_counter()
        model(batch)['loss'].backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        images.append(batch['images'].shape[0])
        if i + 1 == args.steps + 2:
            break
    print(f'{args.batch} questions, max {args.max_per_group} per image: {statistics.median(times[2:]):.3f} s per '
          f'step, {statistics.mean(images):.1f} images per step ({args.threads} thread(s))')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
