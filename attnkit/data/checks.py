"""Checks a dataset runs when it is built, so a bad file list fails at once instead of mid-training."""
from __future__ import annotations

import os
from typing import Iterable

from ..errors import DataError

__all__ = ['check_files_exist', 'resolve_inside']


def check_files_exist(paths: Iterable[str | os.PathLike], *, source: str, what: str = 'image',
                      show: int = 3) -> None:
    """Raise one DataError when any of ``paths`` is not a file: the count and the first ``show`` names.

    One ``os.stat`` per path (about 5 s for 118k files on a local disk, far less when cached).

    Args:
        paths: the files a dataset lists.
        source: what lists them (an annotation file, a split file), named in the error.
        what: the kind of file, for the message (``'image'``, ``'label'``).
    """
    missing: list[str] = []
    count = 0
    for path in paths:
        ok = os.path.isfile(path)  # one stat; a directory of that name is as wrong as no file
        if not ok:
            count += 1
            if len(missing) < show:
                missing.append(os.fspath(path))
    if count:
        more = f' and {count - len(missing)} more' if count > len(missing) else ''
        # the folder once, then the names: the message stays one short line however deep the folder is
        folder = os.path.dirname(missing[0])
        if all(os.path.dirname(m) == folder for m in missing):
            names = ', '.join(repr(os.path.basename(m)) for m in missing)
            raise DataError(f"{source}: {count} listed {what} file(s) do not exist in {folder!r}, e.g. {names}{more}.")
        raise DataError(f"{source}: {count} listed {what} file(s) do not exist, e.g. "
                        f"{', '.join(repr(m) for m in missing)}{more}.")


def resolve_inside(root: str | os.PathLike, name: str, *, record: str) -> str:
    """``root/name``; a DataError when ``name`` is absolute or leaves ``root`` (``..``). Called per file of a
    dataset (and per sample by the VQA reader), so a plain relative name takes a fast path.

    Args:
        root: the folder the dataset's files must lie in.
        name: the relative file name an annotation gives.
        record: the record that gives it (file + id), named in the error.
    """
    if not os.path.isabs(name) and '..' not in name.replace('\\', '/').split('/'):
        return os.path.join(root, name)  # relative without '..': inside by construction (the full check is ~50 us)
    root_abs = os.path.abspath(root)
    path = os.path.abspath(os.path.join(root_abs, name))
    if os.path.isabs(name) or os.path.commonpath([root_abs, path]) != root_abs:
        raise DataError(f"{record}: file name {name!r} leaves the image folder {os.fspath(root)!r}; "
                        f"file names must be relative paths inside it.")
    return path
