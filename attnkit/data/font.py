"""The font for sentences on pictures (the VQA question and answers)."""
from __future__ import annotations

from functools import lru_cache

from PIL import ImageFont

__all__ = ['label_font']


@lru_cache(maxsize=8)
def label_font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels. At Pillow's default 10 px a space is 2 px wide and the words of
    a question run together on the picture; at 12 it is 3. Pillow without FreeType: its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()
