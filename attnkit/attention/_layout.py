"""Parameter layouts of the channel-gate modules: attnkit's own and timm's (so timm checkpoints load).

``'attnkit'`` (the default) keeps the layout attnkit checkpoints were written with (``nn.Linear`` MLPs with bias,
hidden width ``max(min_channels, C // reduction)``). ``'timm'`` holds exactly the parameters of timm's modules
(``timm.layers.SEModule``, ``EcaModule``, ``CbamModule``), under timm's names, with timm's hidden-width rounding
(:func:`make_divisible`), so a timm state dict loads key for key and gives the same outputs.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import closest_names

__all__ = ['LAYOUTS', 'check_layout', 'make_divisible', 'hidden_width']

LAYOUTS = ('attnkit', 'timm')


def check_layout(owner: str, layout: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else :class:`ConfigError` naming the closest valid one."""
    if layout not in LAYOUTS:
        close = closest_names(str(layout), LAYOUTS)
        hint = f" Did you mean {close[0]!r}?" if close else ''
        raise ConfigError(f"{owner} layout {layout!r} is not one of {', '.join(map(repr, LAYOUTS))}.{hint}")
    return layout


def make_divisible(value: float, divisor: int) -> int:
    """timm's channel rounding with ``round_limit=0`` (as its SE/CBAM modules call it): ``value`` rounded to the
    nearest multiple of ``divisor`` (halves up), at least ``divisor``."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def hidden_width(channels: int, reduction: float, min_channels: int, divisor: int | None) -> int:
    """MLP hidden width: ``max(min_channels, C // reduction)`` (attnkit) or, with a ``divisor``, timm's
    ``make_divisible(C / reduction, divisor)``."""
    if divisor is None:
        return max(min_channels, int(channels // reduction))
    if divisor < 1:
        raise ValueError(f'divisor must be a positive integer, got {divisor}.')
    return make_divisible(channels / reduction, divisor)
