"""The ``attnkit`` command: train | test | infer | data demo | bench | demo.

Errors the user can fix (bad config key, missing data, a checkpoint of another model) print one line
``error: ...`` on stderr and exit with code 2; ``ATTNKIT_DEBUG=1`` shows the stack trace instead.

Many GPUs or nodes: ``accelerate launch -m attnkit train CONFIG`` (every process runs this same command).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Sequence

__all__ = ['main', 'build_parser']


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(prog='attnkit', description='Attention-augmented CNNs for detection, '
                                     'segmentation and VQA: train, test, infer.')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('train', help='train a model from a config')
    p.add_argument('config', help='config file (.py)')
    p.add_argument('--work-dir', help='where checkpoints and logs go (default work_dirs/<config name>)')
    p.add_argument('--resume', nargs='?', const=True, default=None, metavar='PATH',
                   help='resume from PATH, or from WORK_DIR/latest.pth when no path is given')
    p.add_argument('--amp', choices=('fp16', 'bf16'), help='mixed precision (bf16 also on CPU)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config keys, e.g. optim.optimizer.lr=0.02 data.train.batch_size=4')

    p = sub.add_parser('test', help='evaluate a checkpoint on data.test (or data.val)')
    p.add_argument('config')
    p.add_argument('checkpoint', help='a .pth checkpoint or model.safetensors')
    p.add_argument('--out', help="write the evaluator's results file (COCO/VQA JSON) or the metrics JSON here")
    p.add_argument('--amp', choices=('fp16', 'bf16'), help='mixed precision for inference')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('infer', help='run a model on images and write pictures of its predictions')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('images', nargs='+', metavar='IMAGE')
    p.add_argument('--question', help='the question (VQA models)')
    p.add_argument('--out', default='outputs', help='output folder (default: outputs)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('data', help='data utilities')
    data_sub = p.add_subparsers(dest='data_command', required=True, metavar='DATA_COMMAND')
    d = data_sub.add_parser('demo', help='generate the synthetic shapes demo data set')
    d.add_argument('--out', help='output folder')
    d.add_argument('--num-train', type=int)
    d.add_argument('--num-val', type=int)
    d.add_argument('--size', type=int, help='image side in pixels')
    d.add_argument('--seed', type=int)
    d.add_argument('--force', action='store_true', default=None, help='overwrite existing data')

    p = sub.add_parser('bench', help='run a benchmark: attnkit bench KIND [args...]', add_help=False)
    p.add_argument('kind', help='attention, detection, segmentation, vqa, engine')
    p.add_argument('args', nargs=argparse.REMAINDER)

    p = sub.add_parser('demo', help='train and evaluate the demo models', add_help=False)
    p.add_argument('args', nargs=argparse.REMAINDER)
    return parser


def _load_cfg(path: str, options: dict[str, Any] | None) -> Any:
    from .config import load_config
    from .engine.utils import import_custom_modules
    cfg = load_config(path, options)
    import_custom_modules(cfg)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import Trainer
    cfg = _load_cfg(args.config, args.cfg_options)
    trainer = Trainer(cfg, work_dir=args.work_dir, resume=args.resume, mixed_precision=args.amp)
    metrics = trainer.train()
    if trainer.is_main:
        if metrics:
            print('final: ' + ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
        print(f'checkpoints and logs in {trainer.work_dir}')
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from accelerate import Accelerator

    from .builder import build_dataset, build_evaluator
    from .engine import evaluate, load_model
    from .engine.logging import format_metrics
    from .engine.utils import resolve_channels_last
    from .errors import ConfigError
    import torch
    cfg = _load_cfg(args.config, args.cfg_options)
    data = cfg.get('data') or {}
    part = data.get('test') or data.get('val')
    if not part:
        raise ConfigError(f'Config {args.config!r} has neither data.test nor data.val to test on.')
    if cfg.get('evaluator') is None:
        raise ConfigError(f'Config {args.config!r} has no evaluator.')
    runtime = cfg.get('runtime') or {}
    config_mp = runtime.get('mixed_precision') if runtime.get('mixed_precision') not in (None, 'no') else None
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state()  # an earlier Trainer in this process may have used another precision
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=args.amp or config_mp)  # None: accelerate launch's setting or 'no'
    model = load_model(cfg, args.checkpoint).to(accelerator.device)
    channels_last = resolve_channels_last(runtime.get('channels_last', 'auto'), next(model.parameters()).device,
                                          training=False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dataset = build_dataset(part['dataset'], metainfo=getattr(model, 'metainfo', None))
    evaluator = build_evaluator(cfg['evaluator'], dataset=dataset)
    metrics = evaluate(model, dataset, evaluator, accelerator, batch_size=int(part.get('batch_size', 1)),
                       num_workers=int(part.get('num_workers', 0)), channels_last=channels_last, progress=True)
    if accelerator.is_main_process:
        print(format_metrics(metrics, f'{args.checkpoint} on {len(dataset)} images:'))
        summary = evaluator.summary() if hasattr(evaluator, 'summary') else ''
        if summary:
            print(summary)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            if hasattr(evaluator, 'dump_results'):
                evaluator.dump_results(args.out)
            else:
                with open(args.out, 'w', encoding='utf-8') as f:
                    json.dump(metrics, f, indent=2)
            print(f'wrote {args.out}')
    accelerator.end_training()
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .engine import load_model
    from .errors import ConfigError
    from .registry import INFERENCERS
    cfg = _load_cfg(args.config, args.cfg_options)
    for image in args.images:
        if not os.path.isfile(image):
            raise FileNotFoundError(f'Image {image!r} does not exist.')
    model_type = cfg['model'].get('type')
    infer = INFERENCERS.get(model_type) if isinstance(model_type, str) else None
    if infer is None:
        known = ', '.join(sorted(INFERENCERS.module_dict)) or 'none'
        raise ConfigError(f'No inferencer for model type {model_type!r} (inferencers exist for: {known}).')
    model = load_model(cfg, args.checkpoint)
    files = infer(model, cfg, list(args.images), args.out, question=args.question)
    for f in files or []:
        print(f)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data.demo import generate_demo_data
    names = {'out': 'out_dir', 'num_train': 'num_train', 'num_val': 'num_val', 'size': 'size', 'seed': 'seed',
             'force': 'force'}
    kwargs = {dst: getattr(args, src) for src, dst in names.items() if getattr(args, src) is not None}
    out_dir = kwargs.pop('out_dir', None)
    result = generate_demo_data(out_dir, **kwargs) if out_dir is not None else generate_demo_data(**kwargs)
    if isinstance(result, dict):
        for key, value in result.items():
            print(f'{key}: {value}')
    elif result is not None:
        print(result)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    try:
        module = importlib.import_module(f'attnkit.benchmarks.{args.kind}')
    except ModuleNotFoundError as exc:
        if exc.name != f'attnkit.benchmarks.{args.kind}':
            raise
        raise ConfigError(f'Unknown benchmark {args.kind!r}: there is no attnkit/benchmarks/{args.kind}.py.') from exc
    return int(module.main(list(args.args)) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    demo = importlib.import_module('attnkit.demo')
    return int(demo.main(list(args.args)) or 0)


COMMANDS = {'train': cmd_train, 'test': cmd_test, 'infer': cmd_infer, 'data': cmd_data, 'bench': cmd_bench,
            'demo': cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == 'bench' and not argv[1].startswith('-'):
        args = argparse.Namespace(command='bench', kind=argv[1], args=argv[2:])  # KIND's own options pass through
    elif argv and argv[0] == 'demo':
        args = argparse.Namespace(command='demo', args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    from .errors import AttnkitError
    try:
        return COMMANDS[args.command](args)
    except (AttnkitError, FileNotFoundError) as exc:
        if os.environ.get('ATTNKIT_DEBUG'):
            raise
        message = ' '.join(str(exc).split()) if isinstance(exc, AttnkitError) else _file_message(exc)
        print(f'error: {message}', file=sys.stderr, flush=True)
        return 2


def _file_message(exc: FileNotFoundError) -> str:
    if exc.filename:
        return f'{exc.strerror or "No such file"}: {exc.filename}'
    return ' '.join(str(exc).split())


if __name__ == '__main__':
    sys.exit(main())
