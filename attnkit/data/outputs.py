"""Output file names that never overwrite a user's file: an input image, another output of this run, or a file
already in the output folder (an earlier run's picture).

``attnkit infer a/x.png b/x.png --out a`` writes ``a/x_pred.png`` and ``a/x_pred_1.png`` and leaves ``a/x.png``
as it was.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

__all__ = ['OutputNames']


def _key(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


class OutputNames:
    """Hands out free file names in ``out_dir``.

    Name ``n`` of stem ``x`` and suffix ``'_pred.png'`` is ``x_pred.png`` (n = 0), then ``x_pred_1.png``,
    ``x_pred_2.png``... A name is free when no file (or link) of that name exists, it is not one of the
    ``inputs``, and this object has not handed it out before.

    Args:
        out_dir: the output folder (created here).
        inputs: the files the command reads; never handed out, even through a link or another spelling.
    """

    def __init__(self, out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
        self.out_dir = os.fspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self._taken = {_key(os.fspath(p)) for p in inputs}

    def name(self, stem: str, suffix: str, n: int = 0) -> str:
        """The path of name number ``n`` (free or not)."""
        root, ext = os.path.splitext(suffix)
        return os.path.join(self.out_dir, f"{stem}{root}{f'_{n}' if n else ''}{ext}")

    def is_free(self, path: str) -> bool:
        return _key(path) not in self._taken and not os.path.lexists(path)

    def number(self, stem: str, suffixes: Sequence[str]) -> int:
        """The smallest ``n`` for which every ``suffix`` gives a free name: one number for all files of an image."""
        n = 0
        while not all(self.is_free(self.name(stem, s, n)) for s in suffixes):
            n += 1
        return n

    def claim(self, stem: str, suffix: str, n: int = 0) -> str:
        """The first free name from number ``n`` on, reserved so no later call hands it out again."""
        while not self.is_free(path := self.name(stem, suffix, n)):
            n += 1
        self._taken.add(_key(path))
        return path
