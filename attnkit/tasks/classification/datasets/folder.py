"""``ImageFolder``: ``root/<class>/<image>`` (the torchvision / ImageNet layout)."""
from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Sequence

from ....errors import DataError
from ....registry import DATASETS, closest_names
from .base import IMG_EXTENSIONS, ClassificationDataset

__all__ = ['ImageFolder']


@DATASETS.register_module('ImageFolder')
class ImageFolder(ClassificationDataset):
    """Single-label images in one sub-folder per class::

        root/circle/0001.jpg
        root/circle/more/0002.png      (sub-folders of a class folder are searched too)
        root/square/...

    Classes are the sub-folder names, sorted (so ``train`` and ``val`` folders with the same classes agree);
    files with other endings than ``extensions`` are skipped. A class folder without images keeps its class
    index and is reported in ONE warning that counts and names such folders.

    Args:
        root: the folder of class folders.
        pipeline: transform configs (see :class:`ClassificationDataset`).
        classes: class names to use (default: the sorted sub-folder names); ``metainfo['classes']`` (the training
            set's, or a checkpoint's) takes precedence, so a validation folder is read with the training classes.
        extensions: image file endings (case-insensitive).
        metainfo: ``{'classes': [...]}`` from training data or a checkpoint.

    Raises:
        DataError: ``root`` is not a folder, has no class folders, has a class folder that is not one of the
            given classes (named, with the closest known names), or has no image at all.
    """

    def __init__(self, root: str, pipeline: Any = None, classes: Sequence[str] | None = None,
                 extensions: Sequence[str] = IMG_EXTENSIONS, metainfo: Mapping[str, Any] | None = None) -> None:
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise DataError(f'ImageFolder root {root!r} does not exist or is not a folder.')
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))
        if not folders:
            raise DataError(f'ImageFolder root {root!r} has no class folders (expected root/<class>/<image>).')
        given = (metainfo or {}).get('classes') or classes
        class_names = [str(c) for c in given] if given else folders
        index = {c: i for i, c in enumerate(class_names)}
        for name in folders:
            if name not in index:
                close = closest_names(name, class_names)
                hint = f" (closest: {', '.join(repr(c) for c in close)})" if close else ''
                raise DataError(f'ImageFolder {root!r}: class folder {name!r} is not one of the '
                                f'{len(class_names)} classes{hint}; classes: {class_names[:20]}.')
        exts = tuple(e.lower() for e in extensions)
        records: list[tuple[str, int]] = []
        empty = []
        for name in folders:
            found = []
            for dirpath, dirnames, files in os.walk(os.path.join(root, name), followlinks=True):
                dirnames.sort()
                found += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith(exts)]
            if not found:
                empty.append(name)
            records += [(f, index[name]) for f in found]
        if not records:
            raise DataError(f'ImageFolder {root!r}: no image files ({", ".join(exts)}) in its {len(folders)} '
                            f'class folders.')
        if empty:
            shown = ', '.join(repr(e) for e in empty[:10]) + (f' and {len(empty) - 10} more' if len(empty) > 10 else '')
            warnings.warn(f'ImageFolder {root!r}: {len(empty)} class folder(s) have no images: {shown}; they keep '
                          f'their class index.', UserWarning, stacklevel=2)
        self.root = root
        self.empty_classes = empty
        super().__init__(records, class_names, multi_label=False, pipeline=pipeline, source=f'ImageFolder {root!r}')
