"""Drawing detections on an image (PIL)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ['draw_detections', 'PALETTE']

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
           (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128)]


def draw_detections(image: np.ndarray | Image.Image, boxes: np.ndarray, labels: Sequence[int],
                    scores: Sequence[float], classes: Sequence[str], score_thr: float = 0.3,
                    line_width: int | None = None) -> Image.Image:
    """Draw boxes with "class score" captions.

    Args:
        image: (H, W, 3) uint8 RGB array or a PIL image.
        boxes: (K, 4) xyxy in the image's pixels; labels: (K,) class indices; scores: (K,).
        classes: class names.
        score_thr: detections below this score are not drawn.
        line_width: box outline width (default: scales with the image size).

    Returns:
        A new RGB PIL image.
    """
    img = image.copy().convert('RGB') if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    draw = ImageDraw.Draw(img)
    width = line_width or max(1, round(max(img.size) / 300))
    font = ImageFont.load_default()
    for box, label, score in zip(np.asarray(boxes).reshape(-1, 4), labels, scores):
        if float(score) < score_thr:
            continue
        colour = PALETTE[int(label) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        name = classes[int(label)] if int(label) < len(classes) else str(int(label))
        text = f'{name} {float(score):.2f}'
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        ty = y1 - (b - t) - 2 if y1 - (b - t) - 2 >= 0 else y1
        draw.rectangle([x1, ty, x1 + (r - l) + 2, ty + (b - t) + 2], fill=colour)
        draw.text((x1 + 1, ty - t + 1), text, fill=(255, 255, 255), font=font)
    return img
