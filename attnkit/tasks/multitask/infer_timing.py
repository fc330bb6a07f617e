"""Inference time of ``MultiTaskModel.predict_all`` (every branch, one backbone pass) against the single-task models.

    python -m attnkit.tasks.multitask.infer_timing configs/demo/multitask_r18_shapes.py \\
        configs/demo/fcos_r18-cbam_fpn_shapes.py configs/demo/danet_r18-d8_shapes.py \\
        configs/demo/mcan_r18_gru_shapes.py [--size 128] [--repeats 20] [--threads 1]

Random weights (time does not depend on them, except the detector's post-processing: its ``score_thr`` is raised
to 1.01 everywhere so no box survives and NMS costs the same); one ``size``x``size`` image with one question;
median wall time over ``repeats`` calls after 3 warm-up calls, on the CPU. Prints the median times and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from .param_count import build_with_train_metainfo


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    with torch.no_grad():
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _no_boxes(model: torch.nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, 'score_thr'):
            m.score_thr = 1.01


def one_image_batch(size: int, vqa_meta: dict | None) -> dict[str, Any]:
    """A one-image batch with every task's inference fields (one question when there is a VQA vocabulary)."""
    g = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {'images': torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=g),
                             'metas': [{'ori_size': (size, size), 'img_size': (size, size),
                                        'scale_factor': (1.0, 1.0)}]}
    if vqa_meta:
        from ..vqa.text import build_tokenizer
        tokens = build_tokenizer(vqa_meta['tokenizer'], vqa_meta.get('question_vocab'))(['what color is the circle?'])
        batch.update(tokens, image_index=torch.zeros(1, dtype=torch.long), question_ids=[0])
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('multitask')
    parser.add_argument('singles', nargs='+')
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    multi = build_with_train_metainfo(args.multitask).eval()
    singles = [build_with_train_metainfo(p).eval() for p in args.singles]
    for m in [multi, *singles]:
        _no_boxes(m)
    vqa_meta = next((meta for name, meta in multi.metainfo['tasks'].items() if multi.tasks[name] == 'vqa'), None)
    batch = one_image_batch(args.size, vqa_meta)
    single_batches = []
    for m in singles:  # a single VQA model gets its own vocabulary's tokens
        meta = getattr(m, 'metainfo', {})
        single_batches.append(one_image_batch(args.size, meta) if 'answers' in meta else batch)
    t_multi = _median_ms(lambda: multi.predict_all(batch), args.repeats)
    t_singles = [_median_ms(lambda m=m, b=b: m(b), args.repeats) for m, b in zip(singles, single_batches)]
    for path, t in zip(args.singles, t_singles):
        print(f'{path}: {t:.1f} ms')
    print(f'sum of the single-task models: {sum(t_singles):.1f} ms')
    print(f'{args.multitask} predict_all: {t_multi:.1f} ms  (ratio {t_multi / sum(t_singles):.2f}; '
          f'{args.threads} thread(s), {args.size} px, median of {args.repeats})')


if __name__ == '__main__':
    main()
