"""matplotlib pictures of one view each: a heat map over the image (with colour bar), ranked channel weights, a
channel-affinity matrix. ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot state, no display needed."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ['heatmap_png', 'channel_png', 'matrix_png', 'note_png']

_SIZE = (4.4, 3.8)
_DPI = 90


def _figure(size: tuple[float, float] = _SIZE):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _title(ax, title: str, width: int = 48) -> None:
    ax.set_title('\n'.join(textwrap.wrap(title, width)[:3]), fontsize=8)


def heatmap_png(path: str | os.PathLike, image: np.ndarray, amap: np.ndarray, title: str, *,
                point: tuple[int, int] | None = None, box: Sequence[float] | None = None,
                lines: Sequence[str] = (), label: str = 'attention', alpha: float = 0.5) -> Path:
    """``amap`` over ``image`` with a colour bar of its values.

    Args:
        image: (H, W, 3) uint8 RGB.
        amap: (H, W) map at the image size (values as they are: the colour bar shows their range).
        title: above the picture (wrapped).
        point: (y, x) query pixel, drawn as a white-ringed dot.
        box: xyxy target box, drawn as a white rectangle.
        lines: text under the picture (the question and top answers of a VQA model...).
        label: the colour bar's label.
    """
    fig = _figure((_SIZE[0], _SIZE[1] + 0.16 * len(lines)))
    bottom = 0.04 + 0.045 * len(lines)
    ax = fig.add_axes((0.03, bottom, 0.76, 0.84 - bottom))
    cax = fig.add_axes((0.82, bottom + 0.05, 0.035, 0.74 - bottom))
    ax.imshow(image)
    im = ax.imshow(np.asarray(amap, np.float32), cmap='jet', alpha=alpha, interpolation='bilinear')
    cbar = fig.colorbar(im, cax=cax)
    cbar.ax.tick_params(labelsize=7)
    cbar.set_label(label, fontsize=7)
    if box is not None:
        from matplotlib.patches import Rectangle
        x1, y1, x2, y2 = box
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor='white', linewidth=1.5))
    if point is not None:
        ax.scatter([point[1]], [point[0]], s=30, c='black', edgecolors='white', linewidths=1.5)
    ax.set_xticks([])
    ax.set_yticks([])
    _title(ax, title)
    for i, line in enumerate(lines):
        fig.text(0.03, bottom - 0.045 * (i + 1) + 0.005, line, fontsize=7.5, family='DejaVu Sans')
    return _save(fig, path)


def channel_png(path: str | os.PathLike, weights: np.ndarray, title: str, top: int = 24) -> Path:
    """Channel attention weights (C,) as a ranked horizontal bar chart of the ``top`` largest (and the spread)."""
    w = np.asarray(weights, np.float32).reshape(-1)
    order = np.argsort(-w, kind='stable')[:top]
    fig = _figure()
    ax = fig.add_axes((0.17, 0.12, 0.78, 0.74))
    ax.barh(np.arange(len(order)), w[order], color='tab:blue')
    ax.set_yticks(np.arange(len(order)), [f'ch {int(c)}' for c in order], fontsize=6)
    ax.invert_yaxis()
    ax.tick_params(axis='x', labelsize=7)
    ax.set_xlabel(f'weight (all {w.size} channels: min {w.min():.3f}, mean {w.mean():.3f}, max {w.max():.3f})',
                  fontsize=7)
    _title(ax, title)
    return _save(fig, path)


def matrix_png(path: str | os.PathLike, matrix: np.ndarray, title: str) -> Path:
    """A (C, C) channel-affinity matrix (DANet's channel attention) with a colour bar."""
    fig = _figure()
    ax = fig.add_axes((0.08, 0.08, 0.7, 0.76))
    cax = fig.add_axes((0.82, 0.12, 0.035, 0.68))
    im = ax.imshow(np.asarray(matrix, np.float32), cmap='viridis', interpolation='nearest')
    cbar = fig.colorbar(im, cax=cax)
    cbar.ax.tick_params(labelsize=7)
    ax.set_xlabel('key channel', fontsize=7)
    ax.set_ylabel('query channel', fontsize=7)
    ax.tick_params(labelsize=6)
    _title(ax, title)
    return _save(fig, path)


def note_png(path: str | os.PathLike, image: np.ndarray, title: str, lines: Sequence[str] = ()) -> Path:
    """The image alone with a title and text lines (the prediction view)."""
    fig = _figure((_SIZE[0], _SIZE[1] + 0.16 * len(lines)))
    bottom = 0.04 + 0.045 * len(lines)
    ax = fig.add_axes((0.03, bottom, 0.76, 0.84 - bottom))
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    _title(ax, title)
    for i, line in enumerate(lines):
        fig.text(0.03, bottom - 0.045 * (i + 1) + 0.005, line, fontsize=7.5)
    return _save(fig, path)
