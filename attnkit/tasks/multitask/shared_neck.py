"""``SharedNeck``: one neck module read by several branches of a ``MultiTaskModel``, run once per image batch.

Each branch on a shared neck is its single-task model with that neck (the same ``in_indices``, channels and
strides), so its heads — including a segmentor's auxiliary head on the backbone maps — are wired as in the
single-task model. The branch's ``neck`` attribute points at the ``SharedNeck`` (not registered as the branch's
child: its weights live once, under ``necks.<name>.*``). Inside :meth:`SharedNeck.reuse` (``predict_all``), a
second call on the same input tensors returns the first call's outputs.

Shapes: the wrapped neck's — a list of (N, C_i, H_i, W_i) maps in, a tuple of (N, C_j, H_j, W_j) maps out.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from torch import Tensor, nn

__all__ = ['SharedNeck', 'attach_shared_neck']


class SharedNeck(nn.Module):
    """``neck`` shared by several branches; see the module docstring.

    Attributes:
        neck: the wrapped neck (its declared ``out_channels``/``strides`` are forwarded).
    """

    def __init__(self, neck: nn.Module) -> None:
        super().__init__()
        self.neck = neck
        self._cache: dict[tuple[int, ...], tuple[Tensor, ...]] | None = None

    @property
    def out_channels(self):  # noqa: ANN201 - whatever the neck declares
        return self.neck.out_channels

    @property
    def strides(self):  # noqa: ANN201
        return getattr(self.neck, 'strides', None)

    @contextlib.contextmanager
    def reuse(self) -> Iterator[None]:
        """Within this block, calls on the same input tensors (by identity; they stay alive meanwhile) run once."""
        self._cache = {}
        try:
            yield
        finally:
            self._cache = None

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, ...]:
        feats = list(feats)
        if self._cache is None:
            return tuple(self.neck(feats))
        key = tuple(id(f) for f in feats)
        if key not in self._cache:
            self._cache[key] = tuple(self.neck(feats))
        return self._cache[key]


def attach_shared_neck(branch: nn.Module, shared: SharedNeck) -> None:
    """Make ``branch`` (an Encoder built with an equivalent neck) use ``shared`` instead of its own neck, without
    registering it as the branch's child (so its weights appear once in the multi-task state dict)."""
    own = branch._modules.pop('neck', None)
    if own is None:
        raise ValueError(f'{type(branch).__name__} has no neck to share.')
    object.__setattr__(branch, 'neck', shared)
