"""The Pascal VOC colour map, shared by the demo-data writer, the segmentation datasets and pictures."""
from __future__ import annotations

__all__ = ['voc_palette']


def voc_palette(n: int = 256) -> list[list[int]]:
    """The first ``n`` colours of the Pascal VOC colour map (bit-interleaved class index) as [r, g, b] triples.

    Index 0 is black (background), 255 is (224, 224, 192) (the ignore label).
    """
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette
