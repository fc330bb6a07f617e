"""Reading a work dir for the report: the training log, the config, the checkpoint, saved tables.

A work dir written by :class:`attnkit.engine.Trainer` holds ``log.jsonl`` (one JSON object per line: ``mode``
``'train'`` records with ``iter``, ``epoch``, ``lr``, the loss parts, ``iter_time``, ``data_time``; ``mode``
``'val'`` records with ``iter``, ``epoch``, ``count`` and every metric), ``config.py``, ``latest.pth`` /
``best.pth`` / ``model.safetensors`` and, once a report was written during training, ``report/per_class.json``.
``attnkit explain --eval`` writes ``interpretability.json``. Whatever is absent is listed in :attr:`RunData.missing`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ['RunData', 'read_run', 'PER_CLASS_FILE', 'LOG_KEYS', 'find_checkpoint']

PER_CLASS_FILE = os.path.join('report', 'per_class.json')
# keys of a log record that are bookkeeping, not a curve
LOG_KEYS = ('time', 'mode', 'epoch', 'iter', 'count')
TIMING_KEYS = ('iter_time', 'data_time')
CHECKPOINTS = ('model.safetensors', 'best.pth', 'latest.pth')


@dataclass
class RunData:
    """What a work dir holds.

    Attributes:
        work_dir: the folder.
        train: 'train' log records in file order (values as floats; non-finite values logged as text are floats).
        val: 'val' log records in file order.
        config_text: the saved ``config.py`` (empty when absent).
        checkpoint: the weights file to draw predictions with (None when absent).
        per_class: ``{'title', 'columns', 'rows'}`` saved at the last evaluation, or None.
        interpretability: the parsed ``interpretability.json`` of ``attnkit explain --eval``, or None.
        missing: one sentence per absent or unreadable part.
        skipped_lines: log lines that were not JSON objects.
    """

    work_dir: str
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    config_text: str = ''
    checkpoint: str | None = None
    per_class: dict[str, Any] | None = None
    interpretability: Any = None
    missing: list[str] = field(default_factory=list)
    skipped_lines: int = 0

    @property
    def final_metrics(self) -> dict[str, float]:
        """The metrics of the last evaluation (primary metric first), without the bookkeeping keys."""
        if not self.val:
            return {}
        return {k: v for k, v in self.val[-1].items() if k not in LOG_KEYS}


def _number(value: Any) -> Any:
    """Log values back to numbers: ``'nan'``/``'inf'`` strings (how JsonlLogger writes them) become floats."""
    if isinstance(value, str) and value.lower() in ('nan', 'inf', '-inf', 'infinity', '-infinity'):
        return float(value)
    return value


def read_log(path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(train records, val records, unreadable lines) of a ``log.jsonl``."""
    train, val, skipped = [], [], 0
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed run
                skipped += 1
                continue
            if not isinstance(record, dict):
                skipped += 1
                continue
            record = {k: _number(v) for k, v in record.items()}
            (val if record.get('mode') == 'val' else train).append(record)
    return train, val, skipped


def find_checkpoint(work_dir: str) -> str | None:
    """The weights to draw with: ``model.safetensors`` (final), else ``best.pth``, else ``latest.pth``."""
    for name in CHECKPOINTS:
        path = os.path.join(work_dir, name)
        if os.path.isfile(path):
            return path
    return None


def read_run(work_dir: str) -> RunData:
    """Everything the report shows that can be read from ``work_dir`` without running a model."""
    run = RunData(work_dir=os.path.abspath(work_dir))
    log = os.path.join(work_dir, 'log.jsonl')
    if os.path.isfile(log):
        run.train, run.val, run.skipped_lines = read_log(log)
        if not run.train:
            run.missing.append('log.jsonl has no training records: no loss or learning-rate curves.')
        if not run.val:
            run.missing.append('log.jsonl has no evaluation records: no metric curves or final metrics.')
        if run.skipped_lines:
            run.missing.append(f'{run.skipped_lines} line(s) of log.jsonl are not JSON (a run cut short?) '
                               'and were skipped.')
    else:
        run.missing.append(f'No training log ({log}): no curves and no metric table.')
    cfg = os.path.join(work_dir, 'config.py')
    if os.path.isfile(cfg):
        with open(cfg, encoding='utf-8', errors='replace') as f:
            run.config_text = f.read()
    else:
        run.missing.append(f'No config ({cfg}): the config and the prediction galleries cannot be shown.')
    run.checkpoint = find_checkpoint(work_dir)
    if run.checkpoint is None:
        run.missing.append(f'No checkpoint in {work_dir} ({", ".join(CHECKPOINTS)}): no prediction or attention '
                           'gallery.')
    run.per_class = _read_json(os.path.join(work_dir, PER_CLASS_FILE), run)
    run.interpretability = _read_json(os.path.join(work_dir, 'interpretability.json'), run)
    return run


def _read_json(path: str, run: RunData) -> Any:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        run.missing.append(f'{path} is unreadable ({type(exc).__name__}): not shown.')
        return None


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number that can be plotted (bools are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)

