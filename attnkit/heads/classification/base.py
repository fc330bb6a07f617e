"""What every classification head shares: the input contract, argument checks and map recording.

A classification head maps the last backbone (or neck) feature map to class logits::

    head = build(HEADS, dict(type='attnpool', feat_size=7), in_channels=512, num_classes=1000)
    logits = head(feat)          # feat (N, 512, H, W), any H x W -> (N, 1000)
    logits = head(feats)         # a list/tuple of maps: feats[in_index] is used (default the last)

Heads that pool by attention store what their class or pooled tokens looked at while inside
``attnkit.attention.record(model)``; the class attribute ``pooled_maps`` states the recorded shape.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

from torch import Tensor, nn

from ...attention.record import Recordable
from ...errors import ConfigError

__all__ = ['ClassificationHead', 'check_positive_int']


def check_positive_int(owner: str, name: str, value: object, *, allow_none: bool = False) -> None:
    """Raise ConfigError naming ``owner`` and ``name`` unless ``value`` is a positive int (or None if allowed)."""
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        extra = ' or None' if allow_none else ''
        raise ConfigError(f'{owner} needs {name} to be a positive integer{extra}, got {value!r}.')


class ClassificationHead(Recordable, nn.Module):
    """Base of the classification heads.

    Args:
        in_channels: C of the feature map the head reads.
        num_classes: K, the number of logits.
        in_index: which map to read when ``forward`` gets a list/tuple of maps (default the last).

    Recording comes from :class:`attnkit.attention.record.Recordable` (``self.recording``,
    ``self.record_map(value, suffix)``): maps are computed only inside ``record(model)``.

    Class attributes:
        pooled_maps: shape of the map recorded under the head's name inside ``record(model)``
            (``None``: the head records nothing).
    """

    pooled_maps: ClassVar[str | None] = None

    def __init__(self, in_channels: int, num_classes: int | None, *, in_index: int = -1) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_int(name, 'in_channels', in_channels)
        check_positive_int(name, 'num_classes', num_classes, allow_none=True)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.in_index = in_index

    def select(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """The (N, in_channels, H, W) map this head reads; ValueError naming the expected shape otherwise."""
        name = type(self).__name__
        if not isinstance(feats, Tensor):
            if not isinstance(feats, (list, tuple)) or not feats:
                raise ValueError(f'{name} expects a (N, {self.in_channels}, H, W) tensor or a non-empty '
                                 f'list of them, got {type(feats).__name__}.')
            try:
                feats = feats[self.in_index]
            except IndexError:
                raise ValueError(f'{name}: in_index={self.in_index} is out of range for {len(feats)} '
                                 f'feature maps.') from None
        if feats.dim() != 4 or feats.shape[1] != self.in_channels:
            raise ValueError(f'{name} expects input (N, {self.in_channels}, H, W), got {tuple(feats.shape)}.')
        if feats.shape[2] < 1 or feats.shape[3] < 1:
            raise ValueError(f'{name} got an empty feature map {tuple(feats.shape)}.')
        return feats

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, num_classes={self.num_classes}'
