"""Pictures: the question-guided attention over the image grid as a heat map laid over the image."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ...data.font import label_font

__all__ = ['attention_heatmap', 'overlay_attention']


def attention_heatmap(attention: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h, w) attention weights -> (H, W) float map in [0, 1], bilinearly resized to ``size`` = (H, W)."""
    att = attention.detach().float()[None, None]
    att = F.interpolate(att, size=size, mode='bilinear', align_corners=False)[0, 0]
    att = att - att.min()
    return (att / att.max().clamp(min=1e-12)).numpy()


def overlay_attention(image: np.ndarray, attention: torch.Tensor | None, out_file: str | os.PathLike,
                      lines: Sequence[str] = (), alpha: float = 0.5) -> str:
    """Write ``image`` with the attention heat map over it and ``lines`` of text under it, as PNG.

    Args:
        image: (H, W, 3) uint8 RGB, the original image.
        attention: (h, w) weights over the grid of the (resized) image, or ``None`` (no overlay).
        out_file: the PNG to write.
        lines: text lines (question, answers with scores) printed below the picture.
        alpha: heat-map opacity.

    Returns:
        The path written.
    """
    from ..segmentation.visualize import add_colorbar, jet
    h, w = image.shape[:2]
    picture = image.astype(np.float32)
    if attention is not None:
        heat = jet(attention_heatmap(attention, (h, w))).astype(np.float32)  # the colour bar's colours
        picture = (1 - alpha) * picture + alpha * heat
    picture = picture.clip(0, 255).astype(np.uint8)
    if attention is not None:  # the colour bar gives the scale of the (min-max normalised) weights
        weights = attention.detach().float()
        picture = add_colorbar(picture, float(weights.min()), float(weights.max()))
    font = label_font()
    draw = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    text_w = max([draw.textbbox((0, 0), line, font=font)[2] for line in lines] or [0]) + 6
    canvas = Image.new('RGB', (max(picture.shape[1], 320, text_w), h + 14 * len(lines) + 6), (255, 255, 255))
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((3, h + 3 + 14 * i), line, fill=(0, 0, 0), font=font)
    out_file = os.fspath(out_file)
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    canvas.save(out_file)
    return out_file
