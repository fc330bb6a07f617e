"""Pictures for segmentation: colour masks blended over the image, attention maps as heat maps."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from PIL import Image

__all__ = ['colorize', 'blend_mask', 'attention_heatmap', 'save_label_png', 'add_colorbar', 'jet']


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


def jet(x: np.ndarray) -> np.ndarray:
    """(...) values in [0, 1] -> (..., 3) uint8 RGB of OpenCV's JET map (the heat maps' colours)."""
    v = (np.clip(np.asarray(x, np.float32), 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(v.reshape(-1, 1), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB).reshape(*v.shape, 3)


def add_colorbar(picture: np.ndarray, vmin: float, vmax: float, label: str = '') -> np.ndarray:
    """``picture`` (H, W, 3) uint8 with a JET colour bar on its right labelled with ``vmax`` (top), ``vmin``
    (bottom) and ``label``: the scale of a min-max normalised heat map. Returns (H, W + bar, 3) uint8."""
    from PIL import ImageDraw

    from ...data.font import label_font
    h = picture.shape[0]
    font = label_font(9 if h < 160 else 12)
    texts = [f'{vmax:.3g}', f'{vmin:.3g}', label]
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    text_w = max(probe.textbbox((0, 0), t, font=font)[2] for t in texts if t) + 4
    bar_w = max(8, h // 16)
    canvas = Image.new('RGB', (picture.shape[1] + bar_w + 6 + text_w, h), (255, 255, 255))
    canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (0, 0))
    ramp = jet(np.linspace(1, 0, h, dtype=np.float32))[:, None, :].repeat(bar_w, axis=1)
    x0 = picture.shape[1] + 3
    canvas.paste(Image.fromarray(ramp), (x0, 0))
    draw = ImageDraw.Draw(canvas)
    tx = x0 + bar_w + 3
    draw.text((tx, 0), texts[0], fill=(0, 0, 0), font=font)
    bottom = draw.textbbox((0, 0), texts[1], font=font)[3]
    draw.text((tx, h - bottom - 1), texts[1], fill=(0, 0, 0), font=font)
    if label:
        draw.text((tx, h // 2 - bottom // 2), label, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def attention_heatmap(image: np.ndarray, attn: np.ndarray, point: tuple[int, int] | None = None,
                      alpha: float = 0.5, colorbar: bool = True) -> np.ndarray:
    """A heat map (jet colours, min-max normalised) of ``attn`` over ``image``; ``point`` (y, x) is marked.

    Args:
        image: (H, W, 3) uint8 RGB.
        attn: (h, w) map over the same field of view; resized bilinearly to (H, W).
        point: the query pixel in image coordinates, drawn as a white ring.
        colorbar: add the colour bar with the map's minimum and maximum on the right (the picture gets wider).

    Returns:
        (H, W, 3) uint8, or (H, W + bar, 3) with the colour bar.
    """
    h, w = image.shape[:2]
    a = cv2.resize(np.asarray(attn, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / max(hi - lo, 1e-12)
    heat = jet(a)
    out = ((1 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)).round().clip(0, 255)
    out = np.ascontiguousarray(out.astype(np.uint8))
    if point is not None:
        radius = max(2, min(h, w) // 40)
        cv2.circle(out, (int(point[1]), int(point[0])), radius, (255, 255, 255), thickness=max(1, radius // 2))
    return add_colorbar(out, lo, hi) if colorbar else out


def save_label_png(path: str, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Write class indices as a palette PNG (Pascal VOC style: pixel values are the indices)."""
    img = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8))
    flat = [v for rgb in palette[:256] for v in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    img.save(path)
