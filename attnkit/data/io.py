"""Reading images with errors that name the file."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = ['read_image', 'read_label_png']


def read_image(path: str | os.PathLike, *, record: str | None = None) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array.

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
            return np.asarray(img.convert('RGB'), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"Image file {os.fspath(path)!r}{where} cannot be read: {exc}") from exc


def read_label_png(path: str | os.PathLike, *, record: str | None = None) -> np.ndarray:
    """Read a label map (palette or grayscale PNG) as an (H, W) uint8 array of class indices.

    A palette ('P' mode) PNG gives its palette indices, not its colours, as Pascal VOC expects.
    """
    where = f" (referenced by {record})" if record else ''
    if not os.path.isfile(path):
        raise DataError(f"Label file {os.fspath(path)!r}{where} does not exist.")
    try:
        with Image.open(path) as img:
            if img.mode not in ('P', 'L', 'I', 'I;16'):
                raise DataError(f"Label file {os.fspath(path)!r}{where} has mode {img.mode!r}; expected a "
                                "palette ('P') or single-channel PNG of class indices.")
            return np.asarray(img, dtype=np.int64).astype(np.uint8) if img.mode != 'I' else np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"Label file {os.fspath(path)!r}{where} cannot be read: {exc}") from exc
