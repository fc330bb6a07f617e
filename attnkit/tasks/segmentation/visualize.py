"""Pictures for segmentation: colour masks blended over the image, attention maps as heat maps."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image

__all__ = ['colorize', 'blend_mask', 'attention_heatmap', 'save_label_png']


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours (``ignore_index`` white, unknown classes grey)."""
    lut = np.full((256, 3), 128, np.uint8)
    for i, rgb in enumerate(palette[:256]):
        lut[i] = rgb
    if 0 <= ignore_index < 256:
        lut[ignore_index] = (255, 255, 255)
    return lut[np.clip(labels, 0, 255).astype(np.uint8)]


def blend_mask(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5,
               background: int | None = 0) -> np.ndarray:
    """The colour mask over the image: ``(1 - alpha) * image + alpha * colour`` where a class is shown.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) class indices of the same size.
        palette: RGB per class.
        alpha: mask opacity.
        background: class left unpainted (``None`` paints every class).
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f'blend_mask: image {image.shape[:2]} and labels {labels.shape} differ in size.')
    colours = colorize(labels, palette).astype(np.float32)
    out = image.astype(np.float32)
    paint = np.ones(labels.shape, bool) if background is None else labels != background
    out[paint] = (1 - alpha) * out[paint] + alpha * colours[paint]
    return out.round().clip(0, 255).astype(np.uint8)


def attention_heatmap(image: np.ndarray, attn: np.ndarray, point: tuple[int, int] | None = None,
                      alpha: float = 0.5) -> np.ndarray:
    """A heat map (jet colours, min-max normalised) of ``attn`` over ``image``; ``point`` (y, x) is marked.

    Args:
        image: (H, W, 3) uint8 RGB.
        attn: (h, w) map over the same field of view; resized bilinearly to (H, W).
        point: the query pixel in image coordinates, drawn as a white ring.
    """
    h, w = image.shape[:2]
    a = cv2.resize(np.asarray(attn, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    heat = cv2.cvtColor(cv2.applyColorMap((a * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = ((1 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)).round().clip(0, 255)
    out = np.ascontiguousarray(out.astype(np.uint8))
    if point is not None:
        radius = max(2, min(h, w) // 40)
        cv2.circle(out, (int(point[1]), int(point[0])), radius, (255, 255, 255), thickness=max(1, radius // 2))
    return out


def save_label_png(path: str, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Write class indices as a palette PNG (Pascal VOC style: pixel values are the indices)."""
    img = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8))
    flat = [v for rgb in palette[:256] for v in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path)
