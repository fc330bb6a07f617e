"""Inference time of ``MultiTaskModel.predict_all`` (every branch, one backbone pass) against the single-task models.

    python -m attnkit.tasks.multitask.infer_timing configs/demo/multitask_r18_shapes.py \\
        configs/demo/fcos_r18-cbam_fpn_shapes.py configs/demo/danet_r18-d8_shapes.py \\
        configs/demo/mcan_r18_gru_shapes.py [--size 128] [--repeats 20] [--threads 1] [--fast [--fast-dtype fp32]]
        [--parts] [--synthetic-labels]

Random weights (time does not depend on them, except the detector's post-processing: its ``score_thr`` is raised
to 1.01 everywhere so no box survives and NMS costs the same), every attention ``gamma`` that starts at 0 set to
0.1 as after training (the fast path would fold identity attention away); one ``size``x``size`` image with one
question; median wall time over ``repeats`` rounds (one call of every model per round) after 3 warm-up rounds, on
the CPU. Prints the median times and their ratio. ``--fast`` times every model on
:func:`attnkit.deploy.prepare_fast`'s path; ``--parts`` also prints the median time per call inside each top-level
part (``backbone``, ``neck``, ``head``, ...; a multi-task model's branches and necks one level deeper) and what is
left outside them (post-processing, input handling). ``--synthetic-labels`` builds real-data configs without their
data (:mod:`~attnkit.tasks.multitask.label_spaces`).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch

from ...benchmarks.deploy import set_trained_gammas
from .param_count import build_with_train_metainfo


def _interleaved_ms(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median wall ms of each of ``fns`` over ``repeats`` rounds (one call of every function per round, after 3
    warm-up rounds): the machine's speed drift hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for round_ in range(3 + repeats):
            for fn, acc in zip(fns, times):
                t0 = time.perf_counter()
                fn()
                if round_ >= 3:
                    acc.append(time.perf_counter() - t0)
    return [statistics.median(acc) * 1e3 for acc in times]


def time_parts(model: torch.nn.Module, acc: dict[str, list[float]]) -> None:
    """Wrap the ``forward`` of each top-level child of ``model`` (of a multi-task model's ``branches`` and ``necks``
    one level deeper) to append its wall seconds to ``acc[name]``; in place."""
    def timed(name: str, module: torch.nn.Module) -> None:
        forward = module.forward

        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            acc.setdefault(name, []).append(time.perf_counter() - start)
            return out
        module.forward = run
    for name, child in model.named_children():
        if name in ('branches', 'necks'):
            for sub_name, sub in child.named_children():
                for part, module in sub.named_children():
                    timed(f'{name}.{sub_name}.{part}', module)
        else:
            timed(name, child)


def _parts_table(acc: dict[str, list[float]], calls: int, total_ms: float) -> list[str]:
    """Median ms per call inside each part (``acc`` holds ``calls`` calls' worth, the warm-up included) and the
    rest of ``total_ms``."""
    lines, inside = [], 0.0
    for name, values in acc.items():
        per_call = len(values) // calls
        sums = [sum(values[i * per_call:(i + 1) * per_call]) for i in range(3, calls)]  # after the warm-up
        ms = statistics.median(sums) * 1e3
        inside += ms
        lines.append(f'    {name:40s} {ms:7.2f} ms')
    lines.append(f"    {'(outside the parts)':40s} {total_ms - inside:7.2f} ms")
    return lines


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
    parser.add_argument('--fast', action='store_true', help='time the models on the fast path (prepare_fast)')
    parser.add_argument('--fast-dtype', default='auto', choices=('auto', 'fp32', 'bf16'))  # FAST_DTYPES' keys
    parser.add_argument('--parts', action='store_true', help='also the time inside each top-level part')
    parser.add_argument('--synthetic-labels', action='store_true',
                        help="build the models with stand-in label spaces of their benchmarks' sizes (COCO 80, VOC "
                             '21, VQA v2 3129 answers) instead of reading the training sets (real-data configs '
                             'without the data)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    multi = build_with_train_metainfo(args.multitask, args.synthetic_labels).eval()
    singles = [build_with_train_metainfo(p, args.synthetic_labels).eval() for p in args.singles]
    for m in [multi, *singles]:
        _no_boxes(m)
        set_trained_gammas(m)  # identity-init attention is folded away at gamma 0; a trained model keeps it
    if args.fast:
        from ...deploy import FAST_DTYPES, prepare_fast
        for m in [multi, *singles]:
            print(prepare_fast(m, bf16=FAST_DTYPES[args.fast_dtype])[1].summary())
    parts: list[dict[str, list[float]]] = [{} for _ in range(1 + len(singles))]
    if args.parts:
        for m, acc in zip([multi, *singles], parts):
            time_parts(m, acc)
    vqa_meta = next((meta for name, meta in multi.metainfo['tasks'].items() if multi.tasks[name] == 'vqa'), None)
    batch = one_image_batch(args.size, vqa_meta)
    single_batches = []
    for m in singles:  # a single VQA model gets its own vocabulary's tokens
        meta = getattr(m, 'metainfo', {})
        single_batches.append(one_image_batch(args.size, meta) if 'answers' in meta else batch)
    t_multi, *t_singles = _interleaved_ms([lambda: multi.predict_all(batch)]
                                          + [lambda m=m, b=b: m(b) for m, b in zip(singles, single_batches)],
                                          args.repeats)
    calls = args.repeats + 3
    for path, t, acc in zip(args.singles, t_singles, parts[1:]):
        print(f'{path}: {t:.1f} ms')
        if args.parts:
            print('\n'.join(_parts_table(acc, calls, t)))
    print(f'sum of the single-task models: {sum(t_singles):.1f} ms')
    print(f'{args.multitask} predict_all: {t_multi:.1f} ms  (ratio {t_multi / sum(t_singles):.2f}; '
          f'{args.threads} thread(s), {args.size} px, median of {args.repeats} interleaved rounds'
          f"{', fast path' if args.fast else ''})")
    if args.parts:
        print('\n'.join(_parts_table(parts[0], calls, t_multi)))


if __name__ == '__main__':
    main()
