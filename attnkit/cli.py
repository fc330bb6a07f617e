"""The ``attnkit`` command: train | test | infer | data demo | bench | demo | report | explain | multitask.

Every failure prints one line ``error: ...`` (under 300 characters) on stderr and exits with code 2: errors the
user can fix (bad config key, missing data, a checkpoint of another model, an unwritable work dir) name the file
or key; anything unexpected is named by its exception type. ``ATTNKIT_DEBUG=1`` shows the stack trace instead.

Many GPUs or nodes: ``accelerate launch -m attnkit train CONFIG`` (every process runs this same command).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from typing import Any, Sequence

__all__ = ['main', 'build_parser']

MAX_ERROR_CHARS = 299  # an error line (``error: ...``) is at most this long


class UsageError(Exception):
    """A command line argparse rejects (exit code 2, one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line (no usage block); subparsers are the same."""

    def error(self, message: str) -> Any:  # argparse calls this and expects it not to return
        raise UsageError(f'{message} (see {self.prog} --help)')


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from .config_values import OptionsAction as DictAction
    parser = _Parser(prog='attnkit', description='Attention-augmented CNNs for classification, detection, '
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
    p.add_argument('--device', help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    _add_fast_options(p)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('infer', help='run a model on images and write pictures of its predictions')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('images', nargs='+', metavar='IMAGE')
    p.add_argument('--question', help='the question (VQA models)')
    p.add_argument('--out', default='outputs', help='output folder (default: outputs)')
    p.add_argument('--device', help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    _add_fast_options(p)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('explain', help='what the attention and the gradient look at, for one prediction '
                       '(--eval: interpretability numbers over the val set)')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('images', nargs='*', metavar='IMAGE', help='images to explain (not with --eval)')
    p.add_argument('--question', help='the question (VQA models)')
    p.add_argument('--target', help='box:K | class:NAME | pixel:Y,X | answer:TEXT (default: the top box, the '
                   'largest predicted class, the top answer)')
    p.add_argument('--out', help='output folder (default: explain_out; --eval: work_dirs/explain_<config name>)')
    p.add_argument('--eval', action='store_true', help='score the attention against the val set objects '
                   '(writes <out>/interpretability.json)')
    p.add_argument('--num-images', type=int, default=20, help='--eval: val images (VQA: colour questions)')
    p.add_argument('--steps', type=int, default=16, help='--eval: deletion/insertion curve steps')
    p.add_argument('--no-faithfulness', action='store_true', help='--eval: skip deletion/insertion (fast)')
    p.add_argument('--device', help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('export', help='export a model to ONNX or torch.export and check it against PyTorch')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--format', default='onnx', dest='fmt', metavar='FORMAT',
                   help='onnx (default) or torch.export')
    p.add_argument('--size', nargs=2, type=int, metavar=('H', 'W'),
                   help="input size, multiples of the model's stride (default 512 512)")
    p.add_argument('--dynamic', action='store_true', help='batch, H, W (and question length) dynamic')
    p.add_argument('--out', help='output file (default: the checkpoint name with .onnx / .pt2)')
    p.add_argument('--image', help='sample image for the check (default: a shapes demo scene)')
    p.add_argument('--question', default='what shape is in the image?', help='sample question (VQA models)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('multitask', help='multi-task utilities: export-branch')
    mt_sub = p.add_subparsers(dest='multitask_command', required=True, metavar='MULTITASK_COMMAND')
    m = mt_sub.add_parser('export-branch', help='write one branch of a multi-task checkpoint as a single-task '
                          'checkpoint (backbone + that branch) that the single-task config loads')
    m.add_argument('config', help='the multi-task config')
    m.add_argument('checkpoint', help='the multi-task checkpoint (.pth or model.safetensors)')
    m.add_argument('--branch', required=True, help='the branch name (a key of model.branches)')
    m.add_argument('--out', required=True, help='output folder (gets model.safetensors)')
    m.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE')

    p = sub.add_parser('data', help='data utilities')
    data_sub = p.add_subparsers(dest='data_command', required=True, metavar='DATA_COMMAND')
    d = data_sub.add_parser('demo', help='generate the synthetic shapes demo data set (COCO, VOC, VQA v2 and an '
                            'ImageFolder classification split of object crops)')
    d.add_argument('--out', help='output folder')
    d.add_argument('--num-train', type=int)
    d.add_argument('--num-val', type=int)
    d.add_argument('--size', type=int, help='image side in pixels')
    d.add_argument('--seed', type=int)
    d.add_argument('--force', action='store_true', default=None, help='overwrite existing data')

    p = sub.add_parser('bench', help='run a benchmark: attnkit bench KIND [args...]', add_help=False)
    p.add_argument('kind', help='attention, detection, segmentation, vqa, engine')
    p.add_argument('args', nargs=argparse.REMAINDER)

    p = sub.add_parser('report', help='write the HTML report of a training run (curves, tables, galleries)')
    p.add_argument('work_dir', metavar='WORK_DIR', help='the work dir of a training run')
    p.add_argument('--out', help='the HTML file to write (default WORK_DIR/report.html)')
    p.add_argument('--images', type=int, default=16, help='val images scored for the best/worst gallery (0: none)')
    p.add_argument('--show', type=int, default=4, help='how many best and how many worst predictions to show')
    p.add_argument('--attention', type=int, default=2, help='gallery images explained by attnkit explain (0: none)')
    p.add_argument('--device', help="cpu, cuda or cuda:N for the galleries (default: cpu)")

    p = sub.add_parser('demo', help='train and evaluate the demo models', add_help=False)
    p.add_argument('args', nargs=argparse.REMAINDER)
    return parser


def _add_fast_options(p: argparse.ArgumentParser) -> None:
    """``--fast``, ``--fast-dtype``, ``--compile``, ``--fast-attention`` of ``test`` and ``infer`` (see
    attnkit.deploy.prepare_fast)."""
    p.add_argument('--fast', action='store_true',
                   help='inference fast path: BatchNorm folded into the convolutions, identity attention removed, '
                        'channels_last, bf16 where the hardware has it (docs/deploy.md)')
    p.add_argument('--fast-dtype', choices=('auto', 'fp32', 'bf16'), default='auto',
                   help='with --fast: auto = bf16 on CUDA with bf16 or a CPU with bf16 units, else fp32')
    p.add_argument('--compile', action='store_true', help='with --fast (implied): torch.compile the model parts '
                   '(the first batches of each size compile, minutes on a CPU)')
    p.add_argument('--fast-attention', choices=('fast', 'eager', 'compile'), default='fast',
                   help='with --fast: the attention modules (se, eca, cbam, gc, coord) in their inference form '
                        '(fast, default), as trained (eager), or each inference form torch.compile-d (compile)')


def _prepare_fast(model: Any, args: argparse.Namespace, amp: str | None) -> Any:
    """The model on the fast path when ``--fast``/``--compile`` was given (report on stderr), else unchanged."""
    if not (args.fast or args.compile):
        return model
    from .deploy import FAST_DTYPES, prepare_fast
    bf16: Any = FAST_DTYPES[args.fast_dtype]
    if amp:  # --amp / the config's mixed precision already autocasts the forward
        bf16 = False
    model, report = prepare_fast(model, bf16=bf16, channels_last=True, compile=args.compile,
                                 attention=args.fast_attention)
    print(report.summary(), file=sys.stderr, flush=True)
    return model


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
    try:
        metrics = trainer.train()
    except (OSError, RuntimeError) as exc:
        error = _work_dir_error(exc, trainer.work_dir)
        if error is exc:
            raise
        raise error from exc
    if trainer.is_main:
        if metrics:
            print('final: ' + ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
        print(f'checkpoints and logs in {trainer.work_dir}')
    return 0


def _work_dir_error(exc: BaseException, work_dir: str) -> BaseException:
    """A failed write of a checkpoint or log under ``work_dir`` (read-only, full disk) as one sentence naming the
    file or folder; other errors are returned unchanged."""
    from .errors import AttnkitError
    if isinstance(exc, OSError) and exc.filename:
        name = os.fspath(exc.filename)
        root = os.path.abspath(work_dir)
        if os.path.commonpath([os.path.abspath(name), root]) != root:
            return exc  # not the work dir (e.g. a data file): the OSError names its own file
        return AttnkitError(f'Cannot write {name!r} in work dir {work_dir!r}: '
                            f'{exc.strerror or exc} (is the folder read-only, or the disk full?)')
    text = str(exc).strip()
    if _raised_by_save(exc):  # torch.save's C++ writer: 'unexpected pos', 'iostream error', 'file write failed'
        return AttnkitError(f'Cannot write a checkpoint in work dir {work_dir!r}: torch.save failed '
                            f'({text.splitlines()[0][:100] if text else type(exc).__name__}); is the folder '
                            'read-only, or the disk full?')
    return exc


def _raised_by_save(exc: BaseException) -> bool:
    """Whether ``exc`` (or the exception it was raised from) came out of torch.save or safetensors' save_file."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            name, file = tb.tb_frame.f_code.co_name, tb.tb_frame.f_code.co_filename
            if ((name in ('save', '_save') and file.endswith(os.path.join('torch', 'serialization.py')))
                    or (name == 'save_file' and 'safetensors' in file)):
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


def cmd_test(args: argparse.Namespace) -> int:
    from accelerate import Accelerator

    from .builder import build_dataset
    from .engine import evaluate, load_model
    from .engine.evaluate import build_split_evaluator
    from .engine.logging import format_metrics
    from .engine.utils import resolve_channels_last
    from .errors import ConfigError
    import torch
    if args.out and (os.path.isdir(args.out) or args.out.endswith(('/', os.sep))):
        raise ConfigError(f'--out {args.out!r} is a folder; give a file name, e.g. '
                          f"{os.path.join(args.out, 'results.json')!r}.")
    if args.out and os.path.realpath(args.out) in {os.path.realpath(args.config), os.path.realpath(args.checkpoint)}:
        raise ConfigError(f'--out {args.out!r} is the config or the checkpoint of this command; give another file '
                          'name (the results would overwrite it).')
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
    from .engine.utils import resolve_device
    device = resolve_device(args.device) if args.device else None  # None: accelerate's choice (cuda if any)
    if device is not None and device.type == 'cuda' and device.index is not None:
        torch.cuda.set_device(device.index)
    accelerator = Accelerator(mixed_precision=args.amp or config_mp,  # None: accelerate launch's setting or 'no'
                              cpu=device is not None and device.type == 'cpu')
    model = load_model(cfg, args.checkpoint).to(accelerator.device)
    channels_last = resolve_channels_last(runtime.get('channels_last', 'auto'), next(model.parameters()).device,
                                          training=False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model = _prepare_fast(model, args, args.amp or config_mp)
    channels_last = channels_last or args.fast or args.compile
    dataset = build_dataset(part['dataset'], metainfo=getattr(model, 'metainfo', None))
    evaluator = build_split_evaluator(cfg['evaluator'], dataset)  # multi-task: each task's evaluator
    metrics = evaluate(model, dataset, evaluator, accelerator, batch_size=part.get('batch_size', 1),
                       num_workers=int(part.get('num_workers', 0)), channels_last=channels_last, progress=True,
                       seed=int((cfg.get('runtime') or {}).get('seed', 0)))  # as Trainer.evaluate draws
    if accelerator.is_main_process:
        sizes = getattr(dataset, 'sizes', None)  # a multi-task split: samples per task
        what = (', '.join(f'{t} {n}' for t, n in sizes.items()) + ' samples' if isinstance(sizes, dict)
                else f'{len(dataset)} images')
        print(format_metrics(metrics, f'{args.checkpoint} on {what}:'))
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
    from .errors import ConfigError, DataError
    from .registry import INFERENCERS
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f'--out {args.out!r} is a file; infer writes its pictures into a folder.')
    cfg = _load_cfg(args.config, args.cfg_options)
    for image in args.images:
        if not os.path.isfile(image):
            raise DataError(f'Image {image!r} given to attnkit infer does not exist.')
    model_type = cfg['model'].get('type')
    infer = INFERENCERS.get(model_type) if isinstance(model_type, str) else None
    if infer is None:
        known = ', '.join(sorted(INFERENCERS.module_dict)) or 'none'
        raise ConfigError(f'No inferencer for model type {model_type!r} (inferencers exist for: {known}).')
    from .engine.utils import resolve_device
    device = resolve_device(args.device)  # default: cuda when available, else cpu
    model = _prepare_fast(load_model(cfg, args.checkpoint).to(device), args, None)
    files = infer(model, cfg, list(args.images), args.out, question=args.question)
    for f in files or []:
        print(f)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain.cli import run_explain
    return run_explain(args)


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy.export import run_export
    for line in run_export(args.config, args.checkpoint, fmt=args.fmt, size=args.size, dynamic=args.dynamic,
                           out=args.out, image=args.image, question=args.question,
                           cfg_options=args.cfg_options):
        print(line, flush=True)
    return 0


def cmd_multitask(args: argparse.Namespace) -> int:
    from .tasks.multitask.export import export_branch_checkpoint
    cfg = _load_cfg(args.config, args.cfg_options)
    path = export_branch_checkpoint(cfg, args.checkpoint, args.branch, args.out)
    print(path)
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


def cmd_report(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .report import write_report
    if not os.path.isdir(args.work_dir):
        raise ConfigError(f'Work dir {args.work_dir!r} given to attnkit report does not exist or is not a folder.')
    if args.out and (os.path.isdir(args.out) or args.out.endswith(('/', os.sep))):
        raise ConfigError(f'--out {args.out!r} is a folder; give an HTML file name, e.g. '
                          f"{os.path.join(args.out, 'report.html')!r}.")
    for name in ('images', 'show', 'attention'):
        if getattr(args, name) < 0:
            raise ConfigError(f'--{name} must be >= 0, got {getattr(args, name)}.')
    from .engine.utils import resolve_device
    path = write_report(args.work_dir, args.out, gallery_images=args.images, show=args.show,
                        attention_images=args.attention, device=resolve_device(args.device or 'cpu'))
    print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    demo = importlib.import_module('attnkit.demo')
    return int(demo.main(list(args.args)) or 0)


COMMANDS = {'train': cmd_train, 'test': cmd_test, 'infer': cmd_infer, 'data': cmd_data, 'bench': cmd_bench,
            'demo': cmd_demo, 'report': cmd_report, 'explain': cmd_explain, 'export': cmd_export,
            'multitask': cmd_multitask}


def _show_attnkit_logs() -> None:
    """Print attnkit's INFO log lines (e.g. the key report of a ``pretrained=`` load: what was taken, dropped and
    kept) as ``attnkit.<part>: message`` on stderr, unless the embedding program configured the logger itself."""
    import logging
    log = logging.getLogger('attnkit')
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(name)s: %(message)s'))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')  # this process only: no PyPI query on import
    _show_attnkit_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get('ATTNKIT_DEBUG'))
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning  # one line per warning, so stderr stays readable
        try:
            if len(argv) >= 2 and argv[0] == 'bench' and not argv[1].startswith('-'):
                args = argparse.Namespace(command='bench', kind=argv[1], args=argv[2:])  # KIND's options pass through
            elif argv and argv[0] == 'demo':
                args = argparse.Namespace(command='demo', args=argv[1:])
            else:
                try:
                    args = build_parser().parse_args(argv)
                except ValueError as exc:  # mmengine's DictAction on a --cfg-options item without '='
                    raise UsageError(f'cannot read the command line ({exc}): --cfg-options takes KEY=VALUE '
                                     'items') from exc
            return COMMANDS[args.command](args)
        except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C anywhere else
            if debug:
                raise
            print('error: interrupted (SIGINT)', file=sys.stderr, flush=True)
            return 130
        except Exception as exc:  # every failure: one line ``error: ...`` on stderr, exit code 2
            if debug:
                raise
            print(error_line(exc), file=sys.stderr, flush=True)
            signum = getattr(exc, 'signum', None)  # TrainingInterrupted: the shell's code for the signal
            return 128 + int(signum) if isinstance(signum, int) else 2


def error_line(exc: BaseException) -> str:
    """``error: <what went wrong>`` in one line of at most MAX_ERROR_CHARS characters.

    attnkit's own errors (bad config, data, checkpoint) and command-line errors are printed as they are; an
    OSError names its file; anything else is an unexpected failure, named by its type.
    """
    from .errors import AttnkitError
    if isinstance(exc, (AttnkitError, UsageError)):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = _file_message(exc)
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        message = (f'{type(exc).__name__}: {first} (an unexpected failure: ATTNKIT_DEBUG=1 shows where)'
                   if first else f'{type(exc).__name__} (an unexpected failure: ATTNKIT_DEBUG=1 shows where)')
    line = 'error: ' + ' '.join(message.split())
    if len(line) > MAX_ERROR_CHARS:  # keep the start (what and which file) and the end (the reason)
        tail = 90
        line = line[: MAX_ERROR_CHARS - tail - 5] + ' ... ' + line[-tail:]
    return line


def _file_message(exc: OSError) -> str:
    if exc.filename:
        reason = exc.strerror or type(exc).__name__
        target = f' -> {exc.filename2}' if getattr(exc, 'filename2', None) else ''
        return f'{reason}: {os.fspath(exc.filename)}{target}'
    return f'{type(exc).__name__}: {exc}'


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


if __name__ == '__main__':
    sys.exit(main())
