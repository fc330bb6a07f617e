"""``record(model)``: collect attention maps from every attention module of a model during a forward.

::

    with record(model, query=(0.5, 0.5)) as maps:
        model(images)
    maps['backbone.layer4.0.sa']   # (N, heads, H, W): where the centre pixel looks

Outside the context nothing is computed or kept: each module checks one attribute (``_recorder``).

Modules that are not attention modules (downsamplers, pooling heads) take part by having a ``_recorder``
attribute, most simply by inheriting :class:`Recordable`: ``record()`` sets it on every module that has one.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import Tensor, nn

from .base import AttentionModule

__all__ = ['record', 'Recorder', 'Recordable', 'Query']

Query = tuple[int | float, int | float]


class Recorder:
    """What one module writes its maps to while recording (one per module)."""

    __slots__ = ('name', 'maps', 'query')

    def __init__(self, name: str, maps: dict[str, Tensor], query: Query | None) -> None:
        self.name = name
        self.maps = maps
        self.query = query

    def put(self, value: Tensor, suffix: str = '') -> None:
        """Keep ``value`` detached; a later forward inside the same context overwrites it."""
        self.maps[self.name + suffix] = value.detach()

    def query_index(self, height: int, width: int) -> int | None:
        """Flat index y * W + x of the query pixel at this module's resolution (None: full maps).

        Integers are pixel coordinates at the module's input size; floats in [0, 1] are relative
        positions (``(0.5, 0.5)`` = the centre at every resolution).
        """
        if self.query is None:
            return None
        y = _coordinate(self.query[0], height, 'y', self.name)
        x = _coordinate(self.query[1], width, 'x', self.name)
        return y * width + x


class Recordable:
    """Mixin (before ``nn.Module``) for a module outside :class:`AttentionModule` that records maps.

    ``record(model)`` sets ``_recorder`` on every module of the model that has the attribute (the hook: a
    class attribute here, so a subclass needs no ``__init__`` code); the module checks ``self.recording``
    and stores maps with ``self.record_map(value, suffix)``.
    """

    _recorder: Recorder | None = None

    @property
    def recording(self) -> bool:
        """True inside ``record(...)`` (compute maps only then)."""
        return self._recorder is not None

    def record_map(self, value: Tensor, suffix: str = '') -> None:
        """Store ``value`` (detached) under this module's name (+ suffix) while recording."""
        if self._recorder is not None:
            self._recorder.put(value, suffix)


def _coordinate(value: int | float, size: int, axis: str, name: str) -> int:
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f'record(query=...): relative {axis} must be in [0, 1], got {value}.')
        return min(int(value * size), size - 1)
    if not isinstance(value, int) or not 0 <= value < size:
        raise ValueError(f'record(query=...): {axis}={value!r} is outside the {size}-pixel extent of the '
                         f'input of {name!r}; pass a pixel index in [0, {size - 1}] or a float in [0, 1].')
    return value


@contextmanager
def record(model: nn.Module, query: Query | None = None) -> Iterator[dict[str, Tensor]]:
    """Record the attention maps of every attention module in ``model`` during forwards in the context.

    Args:
        model: any module; every :class:`AttentionModule` inside it (itself included) records, and so does
            every other module with a ``_recorder`` attribute (:class:`Recordable`: downsamplers, heads).
        query: ``None`` keeps full self-attention maps (N, heads, HW, HW); ``(y, x)`` keeps only the
            attention of that query pixel, (N, heads, H, W). Ints are pixels at each module's input size,
            floats in [0, 1] relative positions.

    Yields:
        ``{qualified module name: map}`` (the model itself is named by its class name), filled by the
        forwards run inside the context; maps are detached. Shapes: se/eca channel weights (N, C);
        cbam spatial (N, 1, H, W) and ``name + '.channel'`` (N, C); coord/simam/gc (N, 1, H, W);
        nonlocal/mhsa/danet_pam/criss_cross (N, heads, HW, HW) or (N, heads, H, W) with ``query``;
        danet_cam (N, C, C); downsamplers (lip, softpool, guided) their importance map (N, 1, H, W) at the
        input resolution.
    """
    maps: dict[str, Tensor] = {}
    modules = [(name or type(m).__name__, m) for name, m in model.named_modules()
               if isinstance(m, AttentionModule) or hasattr(m, '_recorder')]
    previous = [m._recorder for _, m in modules]
    try:
        for name, m in modules:
            m._recorder = Recorder(name, maps, query)
        yield maps
    finally:
        for (_, m), prev in zip(modules, previous):
            m._recorder = prev
