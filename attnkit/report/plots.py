"""Training curves of a run as PNG bytes (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

from .data import LOG_KEYS, TIMING_KEYS, is_number

__all__ = ['curve_figures', 'series']

MAX_PANELS = 24  # metric panels in one figure; more metrics go to further figures


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(iterations, values) of ``key`` over the records that have it as a number (NaN kept: a gap in the line)."""
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if is_number(value) and is_number(r.get('iter')):
            xs.append(float(r['iter']))
            ys.append(float(value))
    return xs, ys


def _keys(records: Sequence[dict[str, Any]], skip: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in keys and k not in skip and is_number(v):
                keys.append(k)
    return keys


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def _grid(panels: list[tuple[str, list[tuple[str, list[float], list[float]]], bool]], title: str) -> bytes:
    """One figure with a subplot per panel: (panel title, [(label, xs, ys)], log-scale y); x is the iteration.

    Kept cheap (it runs after every evaluation of a training): no pyplot state, few tick labels, no tight_layout.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    width, height = 4.2 * cols, 2.7 * rows  # inches
    fig = Figure(figsize=(width, height), dpi=80)
    for i, (name, lines, log_y) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)  # only the axes that are used: each costs tick objects
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker='o' if len(xs) <= 20 else None, markersize=3, linewidth=1.2, label=label)
        ax.set_title(name, fontsize=9, y=1.0, pad=3)  # a fixed y: no automatic placement (a costly layout pass)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        if not any(math.isfinite(y) for _, _, ys in lines for y in ys):
            ax.text(0.5, 0.5, 'no finite value', ha='center', va='center', transform=ax.transAxes, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if log_y and all(y > 0 for _, _, ys in lines for y in ys if math.isfinite(y)):
            ax.set_yscale('log')
        if len(lines) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(f'{title} (x: iteration)', fontsize=10)
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, bottom=0.3 / height, top=1 - 0.5 / height,
                        wspace=0.35, hspace=0.45)
    return _png(fig)


def _metric_panels(val: Sequence[dict[str, Any]]) -> list[tuple[str, list[tuple[str, list[float], list[float]]], bool]]:
    """A panel per metric; metrics named ``<metric>.<class>`` (IoU.circle...) share one panel per ``<metric>``."""
    panels: list[tuple[str, list[tuple[str, list[float], list[float]]], bool]] = []
    groups: dict[str, list[tuple[str, list[float], list[float]]]] = {}
    for key in _keys(val, LOG_KEYS):
        if '.' in key:
            prefix, name = key.split('.', 1)
            if prefix not in groups:
                groups[prefix] = []
                panels.append((f'{prefix} per class', groups[prefix], False))
            groups[prefix].append((name, *series(val, key)))
        else:
            panels.append((key, [(key, *series(val, key))], False))
    return panels


def curve_figures(train: Sequence[dict[str, Any]], val: Sequence[dict[str, Any]]) -> list[tuple[str, str, bytes]]:
    """The run's curves as ``(id, caption, png bytes)``: ``curve-losses`` (the total loss and every loss part),
    ``curve-lr`` (learning rate and seconds per iteration) and ``curve-metrics`` (every validation metric: a panel
    each, per-class metrics ``<metric>.<class>`` together in one panel). Empty logs give no figure.

    Args:
        train: 'train' records of log.jsonl (``iter``, ``lr``, loss parts, ``iter_time``, ``data_time``).
        val: 'val' records (``iter`` and every metric).
    """
    out: list[tuple[str, str, bytes]] = []
    loss_keys = _keys(train, (*LOG_KEYS, 'lr', *TIMING_KEYS))
    if loss_keys:
        total = [k for k in loss_keys if k == 'loss']
        parts = [k for k in loss_keys if k != 'loss']
        panels = [(k, [(k, *series(train, k))], False) for k in total]
        if parts:
            panels.append(('loss parts', [(k, *series(train, k)) for k in parts], False))
        out.append(('curve-losses', f'Training losses: {", ".join(loss_keys)} (mean over each log interval)',
                    _grid(panels, 'training losses')))
    side = [('lr', [('lr', *series(train, 'lr'))], True)] if series(train, 'lr')[0] else []
    timing = [(k, *series(train, k)) for k in TIMING_KEYS if series(train, k)[0]]
    if timing:
        side.append(('seconds per iteration', timing, False))
    if side:
        out.append(('curve-lr', 'Learning rate (first parameter group) and seconds per iteration (compute, data)',
                    _grid(side, 'learning rate and timing')))
    panels = _metric_panels(val)
    for start in range(0, len(panels), MAX_PANELS):
        part = f' ({start // MAX_PANELS + 1})' if len(panels) > MAX_PANELS else ''
        out.append((f'curve-metrics{"-" + str(start // MAX_PANELS + 1) if part else ""}',
                    f'Validation metrics{part}: every metric of every evaluation',
                    _grid(panels[start:start + MAX_PANELS], 'validation')))
    return out
