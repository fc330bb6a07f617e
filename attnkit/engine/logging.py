"""Training logs: ``log.jsonl`` lines, the metrics table, and the TensorBoard availability check."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

__all__ = ['JsonlLogger', 'format_metrics', 'tensorboard_available']


class JsonlLogger:
    """Appends one JSON object per line to ``path`` (main process only: pass ``enabled=False`` elsewhere)."""

    def __init__(self, path: str, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        line = {'time': round(time.time(), 3)}
        line.update({k: _plain(v) for k, v in record.items()})
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(line) + '\n')


def _plain(value: Any) -> Any:
    if hasattr(value, 'item'):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def format_metrics(metrics: Mapping[str, float], title: str = '') -> str:
    """A two-column text table of ``metrics`` (the primary metric first)."""
    if not metrics:
        return f'{title}: no metrics' if title else 'no metrics'
    width = max(len('metric'), *(len(k) for k in metrics))
    rows = [f"{'metric':<{width}} | value", f"{'-' * width}-+-{'-' * 10}"]
    for key, value in metrics.items():
        text = f'{value:.4f}' if isinstance(value, float) else str(value)
        rows.append(f'{key:<{width}} | {text}')
    return '\n'.join(([title] if title else []) + rows)


def tensorboard_available() -> bool:
    """Whether the TensorBoard writer used by accelerate can be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        return True
    except Exception:  # ImportError, or a broken protobuf/tensorboard install
        try:
            import tensorboardX  # noqa: F401
            return True
        except Exception:
            return False
