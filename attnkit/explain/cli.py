"""``attnkit explain`` (argument handling; the work is in :mod:`.run` and :mod:`.evaluate`)."""
from __future__ import annotations

import argparse
import os

from ..errors import ConfigError, DataError

__all__ = ['run_explain']


def run_explain(args: argparse.Namespace) -> int:
    """``attnkit explain CONFIG CHECKPOINT IMAGE...`` or ``attnkit explain --eval CONFIG CHECKPOINT``."""
    from .run import explain_images, load_for_explain
    from .scorer import task_of
    from .targets import parse_target
    if args.eval and args.images:
        raise ConfigError('attnkit explain --eval scores the val set of the config; give no IMAGE.')
    if not args.eval and not args.images:
        raise ConfigError('attnkit explain needs at least one IMAGE (or --eval for the val-set numbers).')
    if args.num_images < 1 or args.steps < 1:
        raise ConfigError('--num-images and --steps must be at least 1.')
    parse_target(args.target)  # a malformed --target fails before the model is built
    for image in args.images:
        if not os.path.isfile(image):
            raise DataError(f'Image {image!r} given to attnkit explain does not exist.')
    out = args.out or (os.path.join('work_dirs', 'explain_' + os.path.splitext(os.path.basename(args.config))[0])
                       if args.eval else 'explain_out')
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f'--out {out!r} is a file; explain writes into a folder.')
    model, cfg = load_for_explain(args.config, args.checkpoint, args.cfg_options, args.device or 'cpu')
    task = task_of(model, cfg)
    if args.eval:
        from .evaluate import evaluate_interpretability, format_table, write_json
        doc = evaluate_interpretability(model, cfg, task=task, num_images=args.num_images, steps=args.steps,
                                        faithfulness=not args.no_faithfulness)
        doc.update(config=args.config, checkpoint=args.checkpoint)
        print(format_table(doc))
        print(f'wrote {write_json(doc, os.path.join(out, "interpretability.json"))}')
        return 0
    results = explain_images(model, list(args.images), out, task=task,
                             questions=[args.question] if args.question else None, target=args.target,
                             device=str(next(model.parameters()).device), cfg=cfg)
    for r in results:
        for note in r['notes']:
            print(f'{r["image"]}: {note}')
        print(f'{r["image"]}: {len(r["views"])} views, target {r["target"]}, {r["seconds"]:.1f} s '
              f'({r["cpu_seconds"]:.1f} s CPU)')
        for v in r['views']:
            print(f'  {v["png"]}')
    if results and results[0]['html']:
        print(f'page: {results[0]["html"]}')
    return 0
