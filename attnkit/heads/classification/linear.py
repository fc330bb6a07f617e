"""The plain head: global average pooling, optional dropout, one linear layer."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from .base import ClassificationHead

__all__ = ['LinearClsHead']


@HEADS.register_module('linear')
class LinearClsHead(ClassificationHead):
    """``logits = W . mean_{h,w} x[:, :, h, w] + b`` (the ResNet head).

    Args:
        in_channels: C. num_classes: K. in_index: see :class:`ClassificationHead`.
        dropout: dropout probability on the pooled vector before the linear layer (0 = none).

    Shapes: x (N, C, H, W), any H x W -> logits (N, K); :meth:`pool` gives the pooled vector (N, C).
    Records nothing (every position weighs 1 / HW).
    """

    def __init__(self, in_channels: int, num_classes: int, *, dropout: float = 0.0, in_index: int = -1) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index)
        if num_classes is None:
            raise ConfigError('LinearClsHead needs num_classes (a positive integer), got None.')
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f'LinearClsHead dropout must be in [0, 1), got {dropout!r}.')
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def pool(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """(N, C, H, W) -> (N, C): the spatial mean."""
        return self.select(feats).mean(dim=(2, 3))

    def forward(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """Args: feats (N, C, H, W) or a list of maps. Returns: logits (N, K)."""
        return self.fc(self.dropout(self.pool(feats)))
