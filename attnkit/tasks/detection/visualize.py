"""Drawing detections on an image (PIL)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['draw_detections', 'PALETTE']

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
           (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128)]


def draw_detections(image: np.ndarray | Image.Image, boxes: np.ndarray, labels: Sequence[int],
                    scores: Sequence[float], classes: Sequence[str], score_thr: float = 0.3,
                    line_width: int | None = None) -> Image.Image:
    """Draw boxes with "class score" captions that do not cover each other.

    Captions are placed best score first, each at the first free spot of: above the box, inside its top, below
    it, inside its bottom (shifted left to stay inside the picture); a caption with no free spot is left out
    (its box is still drawn) rather than hiding another one. The font scales with the picture (9-14 px).

    Args:
        image: (H, W, 3) uint8 RGB array or a PIL image.
        boxes: (K, 4) xyxy in the image's pixels; labels: (K,) class indices; scores: (K,).
        classes: class names.
        score_thr: detections below this score are not drawn.
        line_width: box outline width (default: scales with the image size).

    Returns:
        A new RGB PIL image of the same size.
    """
    from ...data.font import label_font
    img = image.copy().convert('RGB') if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    draw = ImageDraw.Draw(img)
    width = line_width or max(1, round(max(img.size) / 300))
    font = label_font(int(min(14, max(9, round(min(img.size) / 12)))))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep = [i for i in np.argsort(-np.asarray(scores, np.float32), kind='stable') if float(scores[i]) >= score_thr]
    for i in reversed(keep):  # the best box is drawn last, on top
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        draw.rectangle([x1, y1, x2, y2], outline=PALETTE[int(labels[i]) % len(PALETTE)], width=width)
    placed: list[tuple[float, float, float, float]] = []
    for i in keep:
        label = int(labels[i])
        colour = PALETTE[label % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        name = classes[label] if label < len(classes) else str(label)
        text = f'{name} {float(scores[i]):.2f}'
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l + 2, b - t + 2
        spot = _free_spot([(x1, y1 - th), (x1, y1 + width), (x1, y2), (x1, y2 - th - width)], tw, th, img.size,
                          placed)
        if spot is None:
            continue
        x, y = spot
        placed.append((x, y, x + tw, y + th))
        draw.rectangle([x, y, x + tw, y + th], fill=colour)
        draw.text((x + 1 - l, y + 1 - t), text, fill=(255, 255, 255) if sum(colour) < 560 else (0, 0, 0), font=font)
    return img


def _free_spot(candidates: Sequence[tuple[float, float]], tw: float, th: float, size: tuple[int, int],
               placed: Sequence[tuple[float, float, float, float]]) -> tuple[float, float] | None:
    """The first candidate top-left (moved inside the picture) whose tw x th rectangle overlaps no placed one."""
    w, h = size
    for x, y in candidates:
        x = min(max(0.0, x), max(0.0, w - tw))
        if y < 0 or y + th > h:
            continue
        if all(x + tw <= a or b <= x or y + th <= c or d <= y for a, c, b, d in placed):
            return x, y
    return None
