"""Shared parts of the segmentation heads: conv-norm-act blocks, feature selection and the pixel loss.

Every segmentation head maps the backbone/neck feature tuple to a dict of logit maps::

    head(feats) -> {'seg': (N, K, h, w), ...}   # 'seg' is the prediction; other keys are auxiliary outputs

and ``head.loss(outputs, masks)`` turns them into weighted cross-entropy terms (ignore index 255, optional
class weights), upsampling logits bilinearly to the label size.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..dist import global_normalizer

__all__ = ['ConvBNReLU', 'BaseDecodeHead', 'seg_cross_entropy', 'labelled_pixels', 'resize']


def resize(x: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to ``size`` (no-op when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) → BatchNorm → ReLU, 'same' padding for any dilation.

    Args:
        in_channels, out_channels: channels.
        kernel_size: square kernel.
        dilation: dilation rate.
        groups: conv groups (``in_channels`` for depthwise).
        norm: ``'BN'`` or ``'GN'`` (32 groups) or ``None``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 groups: int = 1, norm: str | None = 'BN', act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size,
                                             padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                                             groups=groups, bias=norm is None)]
        if norm == 'BN':
            layers.append(nn.BatchNorm2d(out_channels))
        elif norm == 'GN':
            layers.append(nn.GroupNorm(min(32, out_channels), out_channels))
        elif norm is not None:
            raise ValueError(f"ConvBNReLU: unknown norm {norm!r}; use 'BN', 'GN' or None.")
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def labelled_pixels(target: torch.Tensor, num_classes: int, ignore_index: int = 255,
                    class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """() the number of labelled pixels of ``target`` (N, H, W), or their summed ``class_weight`` (K,)."""
    valid = target != ignore_index
    if class_weight is None:
        return valid.sum()
    return (class_weight[target.clamp(0, num_classes - 1)] * valid).sum()


def seg_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = 255,
                      class_weight: torch.Tensor | None = None,
                      normalizer: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pixel cross-entropy over labelled pixels (0 with a gradient when every pixel is ignored).

    The number of labelled pixels (or their summed class weights) is counted over all processes
    (:func:`~attnkit.heads.dist.global_normalizer`): under DDP, W processes with batch b give exactly the
    gradient of one process with batch W·b, however the labelled pixels are spread. Tensor ops only (no host
    synchronisation); without a process group this is the plain mean.

    Args:
        logits: (N, K, H, W) at the label size (computed in float32).
        target: (N, H, W) long, ``ignore_index`` = no label.
        class_weight: (K,) optional weights; the mean is weighted as in ``F.cross_entropy``.
        normalizer: () the divisor ``global_normalizer(labelled_pixels(...), 1.0)`` when the caller already has
            it (several outputs of one head share the target: one all-reduce, not one per output).

    Returns:
        () float32 loss.
    """
    logits = logits.float()
    total = F.cross_entropy(logits, target, weight=class_weight, ignore_index=ignore_index, reduction='sum')
    if normalizer is None:
        normalizer = global_normalizer(labelled_pixels(target, logits.shape[1], ignore_index, class_weight), 1.0)
    return total / normalizer.to(total.dtype)


class BaseDecodeHead(nn.Module):
    """Feature selection, dropout, 1×1 classifier and the loss shared by the segmentation heads.

    Args:
        in_channels: channels of every input feature (the backbone's/neck's ``out_channels``) or of the
            selected one.
        channels: the head's inner width.
        num_classes: K (given by the Segmentor from its metainfo).
        in_index: which input feature(s) the head reads.
        dropout: dropout before the classifier.
        norm: ``'BN'`` | ``'GN'`` | ``None``.
        ignore_index: label without a class.
        loss_weight: weight of this head's main loss (e.g. 0.4 for an auxiliary head).
        class_weight: optional per-class cross-entropy weights.
        align_corners: for the bilinear upsampling.
        loss_name: key of the main loss in the loss dict (``'loss_seg'``, ``'loss_aux'``).
    """

    def __init__(self, in_channels: int | Sequence[int], channels: int, num_classes: int,
                 in_index: int | Sequence[int] = -1, dropout: float = 0.1, norm: str | None = 'BN',
                 ignore_index: int = 255, loss_weight: float = 1.0, class_weight: Sequence[float] | None = None,
                 align_corners: bool = False, loss_name: str = 'loss_seg') -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"{type(self).__name__}: num_classes must be >= 1, got {num_classes}.")
        self.in_index = in_index
        self.in_channels = self._select_channels(in_channels, in_index)
        self.channels = channels
        self.num_classes = num_classes
        self.norm = norm
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.align_corners = align_corners
        self.loss_name = loss_name
        if class_weight is not None and len(class_weight) != num_classes:
            raise ValueError(f"{type(self).__name__}: class_weight has {len(class_weight)} values for "
                             f"{num_classes} classes.")
        self.register_buffer('class_weight', None if class_weight is None else
                             torch.tensor(class_weight, dtype=torch.float32), persistent=False)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    @staticmethod
    def _select_channels(in_channels: int | Sequence[int], in_index: int | Sequence[int]) -> int | list[int]:
        if isinstance(in_channels, int):
            return in_channels
        chans = list(in_channels)
        if isinstance(in_index, int):
            return chans[in_index]
        return [chans[i] for i in in_index]

    def select(self, feats: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """The feature(s) named by ``in_index`` from the input tuple (a lone tensor is taken as is)."""
        if isinstance(feats, torch.Tensor):
            return feats
        if isinstance(self.in_index, int):
            return feats[self.in_index]
        return [feats[i] for i in self.in_index]

    def cls_seg(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout + 1×1 classifier: (N, channels, h, w) -> (N, K, h, w)."""
        return self.conv_seg(self.dropout(x))

    def loss_weights(self) -> Mapping[str, float]:
        """Loss weight per output key (heads with auxiliary outputs extend this)."""
        return {'seg': self.loss_weight}

    def loss(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted cross-entropy per output.

        Args:
            outputs: from ``forward``: ``{'seg': (N, K, h, w), ...}``.
            target: (N, H, W) long labels (255 = ignore).

        Returns:
            ``{self.loss_name: ..., f'{self.loss_name}_{key}': ...}`` (weights applied).
        """
        losses = {}
        # one cross-process count for all outputs of this head: they share the target
        norm = global_normalizer(labelled_pixels(target, self.num_classes, self.ignore_index, self.class_weight), 1.0)
        for key, weight in self.loss_weights().items():
            if key not in outputs:
                continue
            logits = resize(outputs[key], target.shape[-2:], self.align_corners)
            name = self.loss_name if key == 'seg' else f'{self.loss_name}_{key}'
            losses[name] = weight * seg_cross_entropy(logits, target, ignore_index=self.ignore_index,
                                                      class_weight=self.class_weight, normalizer=norm)
        return losses
