"""ViTDet's simple feature pyramid (Li et al., 2022): a multi-scale pyramid from a plain ViT's last map."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.norm import NORMS, build_norm
from ..errors import ConfigError
from ..registry import NECKS

__all__ = ['SimpleFeaturePyramid', 'LayerNorm2d']

SCALE_FACTORS = (4.0, 2.0, 1.0, 0.5)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each position of an (N, C, H, W) map (ViTDet / ConvNeXt's "LN")."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def _norm(norm: str, channels: int) -> nn.Module:
    return LayerNorm2d(channels) if norm == 'ln' else build_norm(norm, channels)


@NECKS.register_module('SimpleFeaturePyramid')
class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on the last (single-scale) backbone map.

    Per scale factor: 4 = two stride-2 2x2 transposed convs (norm + GELU between), 2 = one, 1 = identity,
    0.5 = 2x2 max pooling; each then a 1x1 conv and a 3x3 conv to ``out_channels``, each followed by a norm
    (no bias). ``extra_levels`` coarser maps follow by stride-2 max pooling (kernel 1) of the last output
    (detectron2's ``LastLevelMaxPool``; FCOS/RetinaNet P6, P7).

    A grid whose stride is not a power of two (DINOv2's patch 14) is first resampled (bilinear) to the nearest
    power-of-two stride: a stride-14 (h, w) grid becomes a stride-16 (round(h * 14 / 16), round(w * 14 / 16))
    grid, so the pyramid has the strides 4, 8, 16, 32 that FPN-style heads (Semantic FPN, FCOS) assume.

    Args:
        in_channels: channels of every backbone map (only the last is used), e.g. ``backbone.out_channels``.
        out_channels: channels of every output.
        in_strides: strides of the backbone maps (only the last is used), e.g. ``backbone.strides``; the task
            models fill it in.
        scale_factors: output scales relative to the (resampled) grid, in decreasing order, from
            ``(4, 2, 1, 0.5)``.
        extra_levels: max-pooled levels after the last scale.
        norm: ``'ln'`` (LayerNorm over channels, ViTDet), ``'gn'``, ``'bn'``, ``'syncbn'`` or ``'frozen_bn'``.

    Attributes:
        out_channels: ``(out_channels,) * num_outs``.
        strides: stride of each output.
        grid_stride: stride of the grid the scales apply to (after resampling).

    Shapes: ``forward(tuple of maps)`` reads the last, (N, in_channels[-1], h, w), and returns one
    (N, out_channels, h' * s, w' * s) map per scale factor s ((h', w') the resampled grid; 0.5 floors), then
    the extra levels (``floor((H - 1) / 2) + 1`` of the previous).
    """

    def __init__(self, in_channels: Sequence[int] | int, out_channels: int = 256,
                 in_strides: Sequence[int] | int | None = None,
                 scale_factors: Sequence[float] = SCALE_FACTORS, extra_levels: int = 0, norm: str = 'ln') -> None:
        super().__init__()
        channels = int(in_channels if isinstance(in_channels, int) else list(in_channels)[-1])
        if in_strides is None:
            raise ConfigError("SimpleFeaturePyramid needs in_strides (the backbone's strides; Segmentor and Detector "
                              "pass backbone.strides, elsewhere set in_strides=(16,) for a patch-16 ViT).")
        stride = int(in_strides if isinstance(in_strides, int) else list(in_strides)[-1])
        scales = tuple(float(s) for s in scale_factors)
        if not scales or any(s not in SCALE_FACTORS for s in scales) \
                or list(scales) != sorted(set(scales), reverse=True):
            raise ConfigError(f"SimpleFeaturePyramid scale_factors must be distinct, decreasing values from "
                              f"{SCALE_FACTORS}, got {tuple(scale_factors)!r}.")
        if norm != 'ln' and norm not in NORMS:
            raise ConfigError(f"SimpleFeaturePyramid norm {norm!r} is not one of 'ln', "
                              f"{', '.join(repr(n) for n in NORMS)}.")
        if extra_levels < 0:
            raise ConfigError(f"SimpleFeaturePyramid extra_levels must be >= 0, got {extra_levels!r}.")
        if stride < 1:
            raise ConfigError(f"SimpleFeaturePyramid in_strides must be positive, got {stride}.")
        self.in_stride = stride
        self.grid_stride = 2 ** round(math.log2(stride))  # 14 -> 16; powers of two stay
        if self.grid_stride < max(scales):
            raise ConfigError(f"SimpleFeaturePyramid: a stride-{stride} grid cannot be upsampled {max(scales):g}x "
                              '(the output stride would be below one pixel).')
        self.scale_factors = scales
        self.extra_levels = int(extra_levels)
        self.stages = nn.ModuleList()
        for scale in scales:
            layers: list[nn.Module] = []
            width = channels
            if scale == 4.0:
                layers = [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2), _norm(norm, channels // 2),
                          nn.GELU(), nn.ConvTranspose2d(channels // 2, channels // 4, 2, stride=2)]
                width = channels // 4
            elif scale == 2.0:
                layers = [nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)]
                width = channels // 2
            elif scale == 0.5:
                layers = [nn.MaxPool2d(2, stride=2)]
            layers += [nn.Conv2d(width, out_channels, 1, bias=False), _norm(norm, out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), _norm(norm, out_channels)]
            self.stages.append(nn.Sequential(*layers))
        strides = [int(self.grid_stride / s) for s in scales]
        for _ in range(self.extra_levels):
            strides.append(strides[-1] * 2)
        self.strides: tuple[int, ...] = tuple(strides)
        self.out_channels: tuple[int, ...] = (out_channels,) * len(strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)  # detectron2's c2_xavier_fill

    def resample(self, x: Tensor) -> Tensor:
        """(N, C, h, w) grid at ``in_stride`` -> (N, C, round(h * in_stride / grid_stride), ...) at ``grid_stride``."""
        if self.in_stride == self.grid_stride:
            return x
        ratio = self.in_stride / self.grid_stride
        size = (max(1, round(x.shape[-2] * ratio)), max(1, round(x.shape[-1] * ratio)))
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False)

    def forward(self, inputs: Sequence[Tensor] | Tensor) -> tuple[Tensor, ...]:
        """Backbone maps (the last one is used) -> one (N, out_channels, ., .) map per ``strides`` entry."""
        x = inputs if isinstance(inputs, Tensor) else inputs[-1]
        x = self.resample(x)
        outs = [stage(x) for stage in self.stages]
        for _ in range(self.extra_levels):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
