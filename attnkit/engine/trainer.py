"""The Trainer: builds data, model, optimizer, schedule from a config and trains on Hugging Face Accelerate.

One process: ``Trainer(cfg).train()``. Many GPUs / nodes / CPU processes: ``accelerate launch -m attnkit train
CONFIG``; each process runs the same Trainer and accelerate wraps the model in DDP.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import signal
import threading
import time
import warnings
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..attention.insert import reattach
from ..builder import build_dataset, build_model
from ..config import check_config
from ..data.randomness import rank_seed
from ..errors import AttnkitError, CheckpointError, ConfigError, DataError
from .checkpoint import check_state_dict, get_rng_state, load_checkpoint, save_atomic, save_safetensors, set_rng_state
from .data import build_train_loader
from .ema import ModelEMA
from .evaluate import build_split_evaluator, evaluate
from .logging import JsonlLogger, format_metrics, tensorboard_available
from .multitask import (best_score, build_task_sampler, check_resume_tasks, is_multitask_config,
                        is_multitask_dataset, task_loss_names)
from .optim import build_optimizer
from .question_sampler import build_batch_sampler
from .schedule import build_scheduler, total_iters
from .utils import (DEFAULT_OPTIM, DEFAULT_RUNTIME, DEFAULT_SCHEDULE, DEFAULT_TRAIN_CFG, import_custom_modules,
                    section, to_device, training_channels_last)

__all__ = ['Trainer', 'NonFiniteLossError', 'TrainingInterrupted']

MIXED_PRECISION = ('no', 'fp16', 'bf16')


class NonFiniteLossError(AttnkitError, FloatingPointError):
    """Too many consecutive steps had non-finite gradients (each was skipped); the message names the iteration,
    the loss terms and the checkpoint that is kept."""


class TrainingInterrupted(AttnkitError):
    """SIGINT or SIGTERM stopped training after the state was saved; ``signum`` and ``path`` say which and where."""

    def __init__(self, message: str, signum: int, path: str | None) -> None:
        super().__init__(message)
        self.signum, self.path = signum, path


class Trainer:
    """Train and evaluate a task model described by a config (schema in docs/design.md).

    Builds, in order: the training dataset, the model (with the dataset's ``metainfo``), the validation
    dataset (same ``metainfo``) and the evaluator, the optimizer (parameter groups from ``optim``), the
    per-iteration learning-rate schedule and, if ``train_cfg.ema`` is set, an EMA of the weights.

    A ``MultiTaskDataset`` training set (docs/multitask.md) switches to one-task batches mixed by
    ``data.train.sampler`` (:mod:`attnkit.engine.task_sampler`), per-task loss logging (``<task>/<term>``) and
    per-task evaluation (``<task>/<metric>``); ``train_cfg.best_metric`` picks the metric (or weighted sum) that
    decides ``best.pth``.

    Args:
        cfg: an mmengine Config (``attnkit.load_config``).
        work_dir: where checkpoints and logs go; default ``cfg.work_dir`` or ``work_dirs/<config name>``.
        resume: ``True`` = ``work_dir/latest.pth``; a path = that checkpoint; ``None``/``False`` = start anew.
        mixed_precision: 'no' | 'fp16' | 'bf16'; overrides ``runtime.mixed_precision``.

    Attributes:
        epoch, iter, batch_in_epoch: progress (iterations are optimizer updates).
        is_main / is_main_process: whether this process writes files and prints.
        hooks: callables ``hook(trainer)`` run after every iteration (e.g. to stop early from outside).
        last_eval_count: records the evaluator received in the last evaluation (all processes).
    """

    def __init__(self, cfg: Any, *, work_dir: str | None = None, resume: str | bool | None = None,
                 mixed_precision: str | None = None) -> None:
        check_config(cfg)  # a config built in code is checked as load_config checks a file
        import_custom_modules(cfg)
        self.cfg = cfg
        self.runtime = section(cfg, 'runtime', DEFAULT_RUNTIME)
        self.optim_cfg = section(cfg, 'optim', DEFAULT_OPTIM)
        self.schedule = section(cfg, 'schedule', DEFAULT_SCHEDULE)
        self.train_cfg = section(cfg, 'train_cfg', DEFAULT_TRAIN_CFG)
        self.work_dir = os.path.abspath(work_dir or cfg.get('work_dir') or self._default_work_dir(cfg))
        # --amp, else the config's runtime.mixed_precision, else `accelerate launch --mixed_precision`, else 'no'
        mp = mixed_precision or self.runtime['mixed_precision'] or 'no'
        if mixed_precision is None and mp == 'no':
            mp = os.environ.get('ACCELERATE_MIXED_PRECISION', 'no').lower()
        if mp not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision {mp!r} is not one of {', '.join(MIXED_PRECISION)}.")
        self.accum = int(self.optim_cfg['accumulate_steps'] or 1)
        self.accelerator = self._build_accelerator(mp)
        acc = self.accelerator
        self.is_main = acc.is_main_process
        self.seed = int(self.runtime['seed'])
        from ..report import report_options
        self.report_options = report_options(self.runtime['report'])  # None: no report.html (runtime.report=False)
        from accelerate.utils import set_seed
        set_seed(self.seed)
        if self.runtime['deterministic']:
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

        data = cfg.get('data') or {}
        if not data.get('train') or not data['train'].get('dataset'):
            raise ConfigError('The config has no data.train.dataset to train on.')
        self.train_dataset = build_dataset(data['train']['dataset'])
        if len(self.train_dataset) == 0:
            raise DataError(f"The training dataset ({data['train']['dataset'].get('type')}) has no samples: check "
                            f"its paths and split files in data.train.dataset.")
        self.metainfo = getattr(self.train_dataset, 'metainfo', None)
        self.multitask = is_multitask_dataset(self.train_dataset)  # one-task batches, per-task losses and metrics
        model = build_model(cfg['model'], metainfo=self.metainfo)
        model.to(acc.device)
        self.channels_last = training_channels_last(self.runtime['channels_last'], acc.device, model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.runtime['sync_bn'] and acc.num_processes > 1:
            if acc.device.type == 'cpu':
                warnings.warn('runtime.sync_bn: SyncBatchNorm needs GPUs; keeping BatchNorm on CPU.')
            else:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                reattach(model)  # the conversion rebuilt norm layers that carried inserted attention
        self._eval_datasets: dict[str, Any] = {}
        self._evaluators: dict[str, Any] = {}
        if data.get('val'):
            self._eval_parts('val')

        optimizer = build_optimizer(model, self.optim_cfg)
        if self.multitask:
            self.batch_size = data['train'].get('batch_size', 2)
            self.sampler = build_task_sampler(self.train_dataset, data['train'], acc.num_processes,
                                              acc.process_index, self.seed)
        else:
            if data['train'].get('sampler'):
                raise ConfigError('data.train.sampler mixes the tasks of a MultiTaskDataset; this training set is '
                                  f"{type(self.train_dataset).__name__}: remove data.train.sampler.")
            self.batch_size = int(data['train'].get('batch_size', 2))
            # ShardedBatchSampler, or GroupCapBatchSampler with data.train.max_per_group (at most k questions of
            # one image per batch, spread over the epoch)
            self.sampler = build_batch_sampler(len(self.train_dataset), self.batch_size, acc.num_processes,
                                               acc.process_index, seed=self.seed,
                                               shuffle=bool(data['train'].get('shuffle', True)),
                                               drop_last=bool(data['train'].get('drop_last', False)),
                                               groups=self._batch_groups(data['train']),
                                               max_per_group=data['train'].get('max_per_group'))
        self.batches_per_epoch = len(self.sampler)
        self.iters_per_epoch = math.ceil(self.batches_per_epoch / self.accum)
        self.max_iters = total_iters(self.schedule, self.iters_per_epoch)
        self.scheduler = build_scheduler(optimizer, self.schedule, self.iters_per_epoch)
        ema_cfg = self.train_cfg['ema']
        try:
            self.ema = ModelEMA(model, **dict(ema_cfg)) if ema_cfg else None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f'train_cfg.ema={dict(ema_cfg)!r}: {exc}') from exc
        self.model, self.optimizer = acc.prepare(model, optimizer)
        # the model was built from `seed` on every process (identical initial weights); what it draws from now
        # on (dropout, drop-path) differs per process. Data-path draws never come from these generators.
        set_seed(rank_seed(self.seed, acc.process_index))
        self._nonfinite_run = torch.zeros((), dtype=torch.long, device=acc.device)  # consecutive skipped steps
        self._nonfinite_total = torch.zeros((), dtype=torch.long, device=acc.device)
        self._interrupt: int | None = None
        self._eval_pending = False

        self.epoch = 0
        self.iter = 0
        self.batch_in_epoch = 0
        self.best: dict[str, Any] = {'name': None, 'value': None, 'epoch': None, 'iter': None, 'bad_evals': 0}
        self.hooks: list[Callable[[Trainer], None]] = []
        self.last_metrics: dict[str, float] = {}
        self.last_eval_count = 0
        self._last_eval_iter = -1
        self._last_save_iter = -1
        self._stop = False
        self._trackers = False
        self.logger = JsonlLogger(os.path.join(self.work_dir, 'log.jsonl'), enabled=self.is_main)
        if self.is_main:
            os.makedirs(self.work_dir, exist_ok=True)
            self._save_config()
        if resume:
            self.resume(os.path.join(self.work_dir, 'latest.pth') if resume is True else str(resume))

    # ----------------------------------------------------------------------------------------------- set-up
    @staticmethod
    def _default_work_dir(cfg: Any) -> str:
        name = os.path.splitext(os.path.basename(getattr(cfg, 'filename', None) or 'attnkit'))[0]
        return os.path.join('work_dirs', name)

    def _build_accelerator(self, mixed_precision: str) -> Any:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState, GradientState
        from accelerate.utils import DistributedDataParallelKwargs
        # A new Trainer in the same process (tests, notebooks) may use another precision: reset the singletons
        # of the previous Accelerator (the process group itself is kept).
        AcceleratorState._reset_state()
        GradientState._reset_state()
        log_with = None
        if self.runtime['tensorboard']:
            if tensorboard_available():
                log_with = 'tensorboard'
            else:
                warnings.warn('TensorBoard is not installed (pip install tensorboard); logging to log.jsonl only.')
        # a multi-task step runs one branch: the other branches' parameters get no gradient in it
        find_unused = bool(self.runtime['find_unused_parameters']) or is_multitask_config(self.cfg)
        ddp = DistributedDataParallelKwargs(find_unused_parameters=find_unused)
        self._log_with = log_with
        acc = Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=self.accum,
                          log_with=log_with, project_dir=self.work_dir, kwargs_handlers=[ddp],
                          step_scheduler_with_optimizer=False)
        if mixed_precision == 'fp16' and not acc.native_amp:
            warnings.warn(f'mixed_precision fp16 is not available on {acc.device.type}; training in float32 '
                          f'(use bf16 on CPU).')
        return acc

    def _save_config(self) -> None:
        try:
            self.cfg.dump(os.path.join(self.work_dir, 'config.py'))
        except Exception as exc:  # a config built in code without a file may not dump
            warnings.warn(f'Could not save the config to {self.work_dir}/config.py: {exc}')

    def _batch_groups(self, train_cfg: Mapping[str, Any]) -> list | None:
        """Group keys for the sampler from ``data.train.group_by`` (e.g. ``'image'``), or None."""
        by = train_cfg.get('group_by')
        if not by:
            return None
        keys_of = getattr(self.train_dataset, 'group_keys', None)
        if keys_of is None:
            raise ConfigError(f"data.train.group_by={by!r}: {type(self.train_dataset).__name__} cannot group its "
                              'samples (it has no group_keys()); remove group_by.')
        return keys_of(by)

    def _eval_parts(self, split: str) -> tuple[Any, Any, dict[str, Any]]:
        """(dataset, evaluator, loader cfg) of ``data.<split>`` (``test`` falls back to ``val``)."""
        data = self.cfg.get('data') or {}
        part = data.get(split) or (data.get('val') if split == 'test' else None)
        if not part:
            raise ConfigError(f'The config has no data.{split} to evaluate on.')
        if split not in self._eval_datasets:
            if self.cfg.get('evaluator') is None:
                raise ConfigError('The config has no evaluator.')
            dataset = build_dataset(part['dataset'], metainfo=self.metainfo)
            self._eval_datasets[split] = dataset
            self._evaluators[split] = build_split_evaluator(self.cfg['evaluator'], dataset)
        return self._eval_datasets[split], self._evaluators[split], part

    @property
    def is_main_process(self) -> bool:
        """Whether this is the process that writes files and prints (rank 0)."""
        return self.is_main

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, dataset_split: str = 'val') -> dict[str, float]:
        """Metrics of the current weights (EMA weights when enabled) on ``data.<dataset_split>``."""
        dataset, evaluator, part = self._eval_parts(dataset_split)
        model = self.ema.module if self.ema is not None else self.unwrapped_model
        metrics = evaluate(model, dataset, evaluator, self.accelerator, batch_size=part.get('batch_size', 1),
                           num_workers=int(part.get('num_workers', 0)), channels_last=self.channels_last,
                           progress=True, seed=self.seed)
        counter = getattr(evaluator, 'num_samples', None)  # a summed-state metric (IoUMetric) keeps no records
        self.last_eval_count = int(counter()) if callable(counter) else len(evaluator.results)
        return metrics

    def _evaluate_and_track(self) -> None:
        if not (self.cfg.get('data') or {}).get('val'):
            return
        metrics = self.evaluate('val')
        self._last_eval_iter = self.iter
        self.last_metrics = metrics
        self.logger.log({'mode': 'val', 'epoch': self.epoch, 'iter': self.iter, 'count': self.last_eval_count,
                         **metrics})
        if self._trackers:
            self.accelerator.log({f'val/{k}': v for k, v in metrics.items()}, step=self.iter)
        if self.is_main:
            _, evaluator, _ = self._eval_parts('val')
            summary = evaluator.summary() if hasattr(evaluator, 'summary') else ''
            print(format_metrics(metrics, f'Evaluation at epoch {self.epoch}, iteration {self.iter}:'), flush=True)
            if summary:
                print(summary, flush=True)
            self._write_report()
        if not metrics:
            return
        name, value = best_score(metrics, self.train_cfg['best_metric'])
        improved = self.best['value'] is None or value > self.best['value'] + self._min_delta()
        if improved:
            self.best.update(name=name, value=float(value), epoch=self.epoch, iter=self.iter, bad_evals=0)
        else:
            self.best['bad_evals'] = int(self.best['bad_evals']) + 1
        if improved:  # best.pth is a full training state: rewrite latest.pth (it now records the best) and copy it
            self._save_checkpoint(best=True)
        es = self.train_cfg['early_stopping']
        if es and self.best['bad_evals'] >= int(es.get('patience', 5)):
            if self.is_main:
                print(f"Early stopping: {name} has not improved for {self.best['bad_evals']} evaluations "
                      f"(best {self.best['value']:.4f} at iteration {self.best['iter']}).", flush=True)
            self._stop = True

    def _write_report(self) -> None:
        """Write ``<work_dir>/report.html`` after an evaluation (main process; ``runtime.report``): curves, tables and
        a small prediction gallery. A failure only warns: the report never stops training."""
        if self.report_options is None or self.multitask:  # the report draws one task's predictions
            return
        try:
            from ..report import write_report
            dataset, evaluator, _ = self._eval_parts('val')
            model = self.ema.module if self.ema is not None else self.unwrapped_model
            write_report(self.work_dir, model=model, cfg=self.cfg, dataset=dataset, evaluator=evaluator,
                         weights=f'the training model at iteration {self.iter}', **self.report_options)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f'Could not write the report in {self.work_dir}: {type(exc).__name__}: {exc}')

    def _min_delta(self) -> float:
        es = self.train_cfg['early_stopping']
        return float(es.get('min_delta', 0.0)) if es else 0.0

    # ----------------------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        from accelerate.utils import gather_object
        rng = get_rng_state()
        rngs = list(gather_object([rng])) if self.accelerator.num_processes > 1 else [rng]
        scaler = self.accelerator.scaler
        return {'model': self.unwrapped_model.state_dict(), 'meta': self.metainfo,
                'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                'ema': self.ema.state_dict() if self.ema is not None else None,
                'scaler': scaler.state_dict() if scaler is not None else None, 'rng': rngs,
                'epoch': self.epoch, 'iter': self.iter, 'iter_in_epoch': self.batch_in_epoch,
                'best': dict(self.best), 'evaluated_iter': self._last_eval_iter, 'config': self._config_text()}

    def _config_text(self) -> str:
        if not hasattr(self, '_cfg_text'):  # pretty_text runs yapf: format once, not at every checkpoint
            try:
                self._cfg_text = self.cfg.pretty_text
            except Exception:
                self._cfg_text = str(getattr(self.cfg, 'text', ''))
        return self._cfg_text

    def _save_checkpoint(self, best: bool = False) -> None:
        """Write ``latest.pth`` (and ``best.pth`` / ``epoch_N.pth``); every process must call it (RNG gather).

        Weights that are not finite are never written: the last finite checkpoint is kept.
        """
        self._check_nonfinite()
        bad = [n for n, t in self.unwrapped_model.state_dict().items()
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise NonFiniteLossError(f'The weights became non-finite ({bad[0]}{" and others" if len(bad) > 1 else ""}) '
                                     f'at iteration {self.iter}; not saved: {self._kept_checkpoint()}.')
        state = self._state()
        if self.is_main:
            latest = os.path.join(self.work_dir, 'latest.pth')
            save_atomic(state, latest)
            if best:
                _copy_atomic(latest, os.path.join(self.work_dir, 'best.pth'))
            keep = int(self.train_cfg['keep_ckpts'] or 0)
            if keep > 0:
                by_epoch = self.schedule['by_epoch'] and self.batch_in_epoch == 0
                name = f'epoch_{self.epoch}.pth' if by_epoch else f'iter_{self.iter}.pth'
                _copy_atomic(latest, os.path.join(self.work_dir, name))
                self._prune(keep)
        self._last_save_iter = self.iter
        self.accelerator.wait_for_everyone()

    def _prune(self, keep: int) -> None:
        found = [(m.group(1), int(m.group(2)), f) for f in os.listdir(self.work_dir)
                 if (m := re.fullmatch(r'(epoch|iter)_(\d+)\.pth', f))]
        for kind in ('epoch', 'iter'):
            files = sorted((n, f) for k, n, f in found if k == kind)
            for _, f in files[:-keep]:
                os.remove(os.path.join(self.work_dir, f))

    def resume(self, path: str) -> None:
        """Restore model, optimizer, scheduler, EMA, scaler, RNG states and the position from ``path``."""
        if not os.path.isfile(path):
            raise CheckpointError(f'Cannot resume: checkpoint {path!r} does not exist.')
        ckpt = load_checkpoint(path)
        model = self.unwrapped_model
        check_resume_tasks(ckpt.get('meta'), self.metainfo, path)
        check_state_dict(model, ckpt['model'], path)
        model.load_state_dict(ckpt['model'])
        if ckpt.get('optimizer') is not None:
            self.optimizer.load_state_dict(ckpt['optimizer'])
        if ckpt.get('scheduler') is not None:
            sched = dict(ckpt['scheduler'])
            # the config's schedule wins (e.g. more epochs on resume)
            sched['lr_lambdas'] = self.scheduler.state_dict()['lr_lambdas']
            self.scheduler.load_state_dict(sched)
        if self.ema is not None and ckpt.get('ema'):
            self.ema.load_state_dict(ckpt['ema'])
        if self.accelerator.scaler is not None and ckpt.get('scaler'):
            self.accelerator.scaler.load_state_dict(ckpt['scaler'])
        rngs = ckpt.get('rng') or []
        if rngs:
            rank = self.accelerator.process_index
            if len(rngs) != self.accelerator.num_processes:
                warnings.warn(f'{path} was written by {len(rngs)} processes, resuming with '
                              f'{self.accelerator.num_processes}: random states are not restored exactly.')
            set_rng_state(rngs[rank % len(rngs)])
        self.epoch = int(ckpt.get('epoch', 0))
        self.iter = int(ckpt.get('iter', 0))
        self.batch_in_epoch = int(ckpt.get('iter_in_epoch', 0))
        if ckpt.get('best'):
            self.best.update(ckpt['best'])
        self._last_save_iter = self.iter
        # the checkpoint is written before the evaluation it precedes: if that evaluation did not finish (a
        # crash, a kill), run it first
        self._last_eval_iter = int(ckpt.get('evaluated_iter', self.iter))
        self._eval_pending = self._last_eval_iter != self.iter and self._eval_due_now()
        if self.is_main:
            print(f'Resumed from {path}: epoch {self.epoch}, iteration {self.iter}.', flush=True)

    # ---------------------------------------------------------------------------------------------- training
    def train(self) -> dict[str, float]:
        """Train to the end of the schedule (or early stopping); return the last evaluation's metrics.

        SIGINT / SIGTERM (in the main thread of the main program) end training after the current iteration: the
        full state is saved as ``latest.pth`` and ``interrupted.pth`` and :class:`TrainingInterrupted` is raised
        (the CLI prints one line). A second SIGINT stops at once.
        """
        acc = self.accelerator
        restore = self._install_signal_handlers()
        try:
            if self._log_with and not self._trackers:
                try:
                    acc.init_trackers('tb')
                    self._trackers = bool(acc.trackers)
                except Exception as exc:  # a broken tensorboard install must not stop training
                    warnings.warn(f'TensorBoard logging disabled: {exc}')
            if self._eval_pending:
                self._eval_pending = False
                self._evaluate_and_track()
            self._train_loop()
            if self._last_save_iter != self.iter:
                self._save_checkpoint()
            if self._last_eval_iter != self.iter:
                self._evaluate_and_track()
            if self.is_main:
                weights = self.ema.module.state_dict() if self.ema is not None else self.unwrapped_model.state_dict()
                save_safetensors(weights, self.metainfo, os.path.join(self.work_dir, 'model.safetensors'))
            acc.wait_for_everyone()
            return self.last_metrics
        finally:
            restore()
            acc.end_training()

    def _install_signal_handlers(self) -> Callable[[], None]:
        """Route SIGINT/SIGTERM to a flag read between iterations; returns the function that restores the old
        handlers. Outside the main thread (signals cannot be caught there) nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self._interrupt is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._interrupt = signum
            if self.is_main:
                print(f'\n{signal.Signals(signum).name} received: saving the state after this iteration '
                      '(Ctrl-C again to stop at once).', flush=True)

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return restore

    def _interrupted(self, at_log_point: bool) -> bool:
        """Whether a signal asks to stop. With several processes the flags are combined (so all stop at the same
        iteration) at log points only: no collective in the other iterations."""
        if self.accelerator.num_processes == 1:
            return self._interrupt is not None
        if not at_log_point:
            return False
        flag = torch.tensor([0 if self._interrupt is None else int(self._interrupt)], device=self.accelerator.device)
        flag = self.accelerator.reduce(flag, reduction='sum')
        if int(flag) and self._interrupt is None:
            self._interrupt = signal.SIGTERM
        return bool(int(flag))

    def _stop_interrupted(self) -> None:
        """Save the state (every process) and raise :class:`TrainingInterrupted`."""
        signum = int(self._interrupt or signal.SIGINT)
        if self._last_save_iter != self.iter or not os.path.exists(os.path.join(self.work_dir, 'latest.pth')):
            self._save_checkpoint()
        path = os.path.join(self.work_dir, 'interrupted.pth')
        if self.is_main:
            _copy_atomic(os.path.join(self.work_dir, 'latest.pth'), path)
        self.accelerator.wait_for_everyone()
        name = signal.Signals(signum).name
        raise TrainingInterrupted(f'{name}: training stopped at iteration {self.iter} (epoch {self.epoch}); the state '
                                  f'is saved in {path}; continue with --resume.', signum, path)

    def _eval_due_now(self) -> bool:
        """Whether the schedule evaluates at the current position (an epoch end or an iteration interval)."""
        if not (self.cfg.get('data') or {}).get('val'):
            return False
        eval_interval = int(self.train_cfg['eval_interval'] or 0)
        if not eval_interval:
            return self.iter >= self.max_iters
        if self.schedule['by_epoch']:
            return self.batch_in_epoch == 0 and self.iter > 0 and (
                self.epoch % eval_interval == 0 or self.iter >= self.max_iters)
        return self.iter % eval_interval == 0 or self.iter >= self.max_iters

    def _train_loop(self) -> None:
        acc, model = self.accelerator, self.model
        data_cfg = self.cfg['data']['train']
        num_workers = int(data_cfg.get('num_workers', 0))
        log_interval = max(int(self.runtime['log_interval'] or 1), 1)
        by_epoch = self.schedule['by_epoch']
        eval_interval = int(self.train_cfg['eval_interval'] or 0)
        ckpt_interval = int(self.train_cfg['checkpoint_interval'] or 0)
        bar = None
        if self.is_main:
            from tqdm.auto import tqdm
            import sys
            # redraw at most once a second on a terminal, every 30 s into a log file: drawing costs time
            interval = 1.0 if sys.stderr.isatty() else 30.0
            bar = tqdm(total=self.max_iters, initial=self.iter, desc='train', dynamic_ncols=True,
                       mininterval=interval)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # batches that gave each loss term (per-task terms: that task's batches)
        count, t_iter, t_data_sum = 0, 0.0, 0.0
        model.train()
        try:
            while self.iter < self.max_iters and not self._stop:
                loader = build_train_loader(self.train_dataset, self.sampler, num_workers, self.seed, self.epoch,
                                            pin_memory=acc.device.type == 'cuda')
                start = self.batch_in_epoch
                if start:
                    loader = acc.skip_first_batches(loader, start)
                acc.step = 0
                t_fetch = t_start = time.perf_counter()
                batches = iter(loader)
                i = start - 1
                while True:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception:
                        if self._interrupt is not None:  # a worker died of the same signal: stop cleanly
                            self._stop_interrupted()
                        raise
                    i += 1
                    t_data_sum += time.perf_counter() - t_fetch
                    if i == self.batches_per_epoch - 1:  # the epoch's last batch always ends an update
                        acc.step = self.accum - 1
                    batch = to_device(batch, acc.device, self.channels_last)
                    losses = self._train_step(batch)
                    self.batch_in_epoch = i + 1
                    names = task_loss_names(losses, batch.get('task') if self.multitask else None)
                    for key, value in losses.items():
                        if isinstance(value, torch.Tensor) and value.numel() == 1:
                            sums[names[key]] = sums.get(names[key], 0.0) + value.detach().float()
                            counts[names[key]] = counts.get(names[key], 0) + 1
                    count += 1
                    if not acc.sync_gradients:
                        t_fetch = time.perf_counter()
                        continue
                    self.scheduler.step()
                    self.iter += 1
                    if self.ema is not None:
                        self.ema.update(self.unwrapped_model)
                    t_iter += time.perf_counter() - t_start
                    at_log = self.iter % log_interval == 0 or self.iter == self.max_iters
                    if at_log:
                        self._log_train(sums, counts, count, t_iter, t_data_sum, bar)
                        sums, counts, count, t_iter, t_data_sum = {}, {}, 0, 0.0, 0.0
                        self._check_nonfinite()
                    if bar is not None:
                        bar.update(1)
                    if not by_epoch:
                        eval_now = eval_interval and self.iter % eval_interval == 0
                        if ((ckpt_interval and self.iter % ckpt_interval == 0) or eval_now) and \
                                self._last_save_iter != self.iter:
                            self._save_checkpoint()  # before the evaluation: a failing evaluation loses nothing
                        if eval_now:
                            self._evaluate_and_track()
                    for hook in self.hooks:
                        hook(self)
                    if self._interrupted(at_log):
                        self._stop_interrupted()
                    if self.iter >= self.max_iters or self._stop:
                        break
                    t_fetch = t_start = time.perf_counter()
                if self.batch_in_epoch >= self.batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if by_epoch:
                        last = self.iter >= self.max_iters
                        eval_now = bool(eval_interval) and (self.epoch % eval_interval == 0 or last)
                        save_now = (ckpt_interval and self.epoch % ckpt_interval == 0) or last or self._stop
                        if (save_now or eval_now) and self._last_save_iter != self.iter:
                            self._save_checkpoint()  # before the evaluation: a failing evaluation loses nothing
                        if eval_now:
                            self._evaluate_and_track()
        finally:
            if bar is not None:
                bar.close()

    def _train_step(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """Forward, backward and (at the end of an accumulation) the guarded optimizer step; returns the losses."""
        acc, model = self.accelerator, self.model
        with acc.accumulate(model):
            losses = model(batch)
            if not isinstance(losses, Mapping) or 'loss' not in losses:
                raise ConfigError(f"In training mode the model must return a dict with a 'loss' entry, got "
                                  f"{type(losses).__name__}{sorted(losses) if isinstance(losses, Mapping) else ''}.")
            acc.backward(losses['loss'])
            if acc.sync_gradients:
                self._guarded_step(losses)
            self.optimizer.zero_grad(set_to_none=True)
        return losses

    def _guarded_step(self, losses: Mapping[str, Any]) -> None:
        """Clip, then step only when every gradient is finite.

        The check stays on the device: a fused optimizer (Adam/AdamW by default) receives the flag as
        ``found_inf`` and skips the update in its kernel; other optimizers read the flag (one small host
        synchronisation). Under fp16 the GradScaler already skips non-finite steps. Consecutive skipped steps are
        counted on the device and read at log time (:meth:`_check_nonfinite`).
        """
        acc, optimizer = self.accelerator, self.optimizer
        grad_clip = self.optim_cfg['grad_clip']
        self._last_losses = {k: v.detach() for k, v in losses.items() if isinstance(v, torch.Tensor)}
        norm = acc.clip_grad_norm_(self.model.parameters(), **dict(grad_clip)) if grad_clip else None
        if acc.scaler is not None:  # fp16: the loss scaler skips inf/NaN steps and lowers its scale (expected early on)
            optimizer.step()
            return
        if norm is None:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=acc.device)
        ok = torch.isfinite(torch.as_tensor(norm, device=acc.device))
        inner = getattr(optimizer, 'optimizer', optimizer)
        on_device = getattr(inner, '_step_supports_amp_scaling', False) and bool(inner.defaults.get('fused'))
        if on_device:
            inner.found_inf, inner.grad_scale = (~ok).float(), None
            try:
                optimizer.step()
            finally:
                del inner.found_inf, inner.grad_scale
        elif bool(ok):
            optimizer.step()
        self._nonfinite_run = (self._nonfinite_run + 1) * (~ok).long()
        self._nonfinite_total += (~ok).long()
        if not on_device:
            self._check_nonfinite()  # the flag is on the host anyway

    def _kept_checkpoint(self) -> str:
        latest = os.path.join(self.work_dir, 'latest.pth')
        return f'{latest} (iteration {self._last_save_iter}) is kept' if os.path.exists(latest) else \
            'no checkpoint was written'

    def _check_nonfinite(self) -> None:
        """Raise :class:`NonFiniteLossError` after ``train_cfg.max_nonfinite_steps`` consecutive skipped steps."""
        limit = int(self.train_cfg.get('max_nonfinite_steps') or 0)
        run = int(self._nonfinite_run)
        if not limit or run < limit:
            return
        terms = ', '.join(f'{k}={float(v.float().mean()):.6g}' for k, v in getattr(self, '_last_losses', {}).items())
        raise NonFiniteLossError(
            f'Non-finite gradients in {run} consecutive steps up to iteration {self.iter} (epoch {self.epoch}); '
            f'each was skipped ({int(self._nonfinite_total)} in all); last losses: {terms}. Training stopped; '
            f'{self._kept_checkpoint()}. Try a lower learning rate, more warm-up, optim.grad_clip, or '
            f'mixed_precision=no.')

    def _log_train(self, sums: dict[str, torch.Tensor], counts: dict[str, int], count: int, t_iter: float,
                   t_data: float, bar: Any) -> None:
        if not sums or not count:
            return
        keys = sorted(sums)
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32) for k in keys])
        values = values / torch.tensor([float(counts[k]) for k in keys], device=values.device)
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values.to(self.accelerator.device), reduction='mean')
        losses = {k: float(v) for k, v in zip(keys, values.tolist())}
        lr = self.optimizer.param_groups[0]['lr']
        n_iters = max(count / self.accum, 1e-9)
        record = {'mode': 'train', 'epoch': self.epoch, 'iter': self.iter, 'lr': lr, **losses,
                  'iter_time': t_iter / n_iters, 'data_time': t_data / n_iters}
        self.logger.log(record)
        if self._trackers:
            self.accelerator.log({f'train/{k}': v for k, v in losses.items()} | {'train/lr': lr}, step=self.iter)
        if bar is not None:
            bar.set_postfix(loss=f"{losses.get('loss', float('nan')):.4f}", lr=f'{lr:.3g}', refresh=False)


def _copy_atomic(src: str, dst: str) -> None:
    tmp = dst + '.tmp'
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
