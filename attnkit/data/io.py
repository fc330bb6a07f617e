"""Reading images with errors that name the file."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = ['read_image', 'read_label_png']


def read_image(path: str | os.PathLike, *, record: str | None = None) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array.

    16-bit grayscale images (PNG mode 'I;16') are scaled to 8 bits as round(v / 257) and repeated to RGB;
    16-bit RGB(A) PNGs keep their high byte (v >> 8, Pillow's own reading).

    Args:
        path: the image file.
        record: what refers to the file (e.g. ``"annotation id 12 in instances_val.json"``), named in the error.

    Raises:
        DataError: the file is missing or not a readable image; the message names the file and the record.
    """
    where = f" (referenced by {record})" if record else ''
    if not os.path.isfile(path):
        raise DataError(f"Image file {os.fspath(path)!r}{where} does not exist.")
    try:
        with Image.open(path) as img:
            if img.mode in _WIDE_MODES:  # 16-bit grayscale: convert('RGB') would clip every value > 255 to white
                gray = _to_uint8(np.asarray(img), img.mode, os.fspath(path), where)
                return np.repeat(gray[:, :, None], 3, axis=2)
            if img.mode == 'F':
                raise DataError(f"Image file {os.fspath(path)!r}{where} has floating-point pixels (mode 'F'); "
                                'expected an 8- or 16-bit image.')
            return np.asarray(img.convert('RGB'), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"Image file {os.fspath(path)!r}{where} cannot be read: {exc}") from exc


_WIDE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')  # 16-bit grayscale (PNG opens as 'I;16', older Pillow 'I')


def _to_uint8(values: np.ndarray, mode: str, path: str, where: str) -> np.ndarray:
    """16-bit values 0..65535 to 0..255 by round(v / 257): the exact inverse of widening 8 bits as v * 257, so
    black stays 0, white stays 255 and an 8-bit image saved as 16 bits reads back unchanged. (Pillow reads
    16-bit RGB(A) PNGs as 8-bit itself, keeping the high byte, i.e. v >> 8.)"""
    wide = values.astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise DataError(f"Image file {path!r}{where} has mode {mode!r} values {int(wide.min())}..{int(wide.max())}, "
                        'outside the 16-bit range 0..65535.')
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def read_label_png(path: str | os.PathLike, *, record: str | None = None) -> np.ndarray:
    """Read a label map (palette or grayscale PNG) as an (H, W) array of class indices.

    A palette ('P' mode) PNG gives its palette indices, not its colours, as Pascal VOC expects. 8-bit maps
    ('P', 'L') come back as uint8; 16-bit and 32-bit maps ('I;16', 'I') as int64 with their exact values, so a
    label such as 257 stays 257 (not 1) and the dataset's class-range check can report it.
    """
    where = f" (referenced by {record})" if record else ''
    if not os.path.isfile(path):
        raise DataError(f"Label file {os.fspath(path)!r}{where} does not exist.")
    try:
        with Image.open(path) as img:
            if img.mode in ('P', 'L'):
                return np.asarray(img, dtype=np.uint8).copy()
            if img.mode in _WIDE_MODES:
                return np.asarray(img).astype(np.int64)
            raise DataError(f"Label file {os.fspath(path)!r}{where} has mode {img.mode!r}; expected a "
                            "palette ('P') or single-channel PNG of class indices.")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"Label file {os.fspath(path)!r}{where} cannot be read: {exc}") from exc
