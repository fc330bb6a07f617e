"""Pictures for classification: the image with its top-k classes, and the pooling head's attention as a heat map."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ...data.font import label_font
from ..segmentation.visualize import attention_heatmap

__all__ = ['draw_topk', 'head_attention_picture', 'MIN_SIDE']

MIN_SIDE = 192  # small images (the 64-px demo crops) are enlarged so the text beside them stays readable


def _enlarge(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max(1, int(np.ceil(MIN_SIDE / max(1, min(h, w)))))
    return image if scale == 1 else np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST))


def draw_topk(image: np.ndarray, names: Sequence[str], scores: Sequence[float], title: str = '') -> Image.Image:
    """``image`` (H, W, 3) uint8 with a white panel on its right listing ``names`` and ``scores`` (best first)."""
    image = _enlarge(image)
    h, w = image.shape[:2]
    font = label_font(14 if h >= 160 else 11)
    lines = ([title] if title else []) + [f'{k}. {n}  {s:.3f}' for k, (n, s) in enumerate(zip(names, scores), 1)]
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    text_w = max(probe.textbbox((0, 0), t, font=font)[2] for t in lines) + 16
    line_h = probe.textbbox((0, 0), 'Ag', font=font)[3] + 6
    canvas = Image.new('RGB', (w + text_w, max(h, line_h * len(lines) + 12)), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(lines):
        draw.text((w + 8, 8 + k * line_h), text, fill=(0, 0, 0) if k or not title else (90, 90, 90), font=font)
    return canvas


def head_attention_picture(image: np.ndarray, attn: np.ndarray) -> Image.Image:
    """The (h, w) attention map ``attn`` as a jet heat map over the (enlarged) image, with its colour bar."""
    return Image.fromarray(attention_heatmap(_enlarge(image), attn))
