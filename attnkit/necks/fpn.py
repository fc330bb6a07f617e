"""Feature Pyramid Network (Lin et al., 2017) with optional attention on every output level."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..builder import build_attention
from ..errors import ConfigError
from ..registry import NECKS

__all__ = ['FPN']

EXTRA_CONV_MODES = ('on_input', 'on_lateral', 'on_output')


@NECKS.register_module('FPN')
class FPN(nn.Module):
    """Feature Pyramid Network, with the options of mmdet's FPN.

    Each used input level gets a 1x1 lateral conv to ``out_channels``; coarser laterals are upsampled
    (to the finer level's exact size) and added top-down; a 3x3 conv smooths each sum. Levels beyond the
    backbone's come from stride-2 max pooling of the last output, or from stride-2 3x3 convs.

    Args:
        in_channels: channels of each input map, finest first (e.g. ``backbone.out_channels``).
        out_channels: channels of every output map.
        num_outs: number of output maps (input levels used plus extra levels).
        start_level: first input level used (e.g. 1 to skip the stride-4 map).
        end_level: last input level used (inclusive); -1 means the last one. When it is not the last
            input level, ``num_outs`` must equal ``end_level - start_level + 1`` (no extra levels).
        add_extra_convs: how extra levels (``num_outs`` above the levels used) are made.
            ``False``: max pooling (kernel 1, stride 2) of the last output (Faster R-CNN).
            ``'on_input'`` (or ``True``): the first extra conv reads the last used backbone map (RetinaNet).
            ``'on_lateral'``: it reads the last lateral map.
            ``'on_output'``: it reads the last FPN output (FCOS).
            Later extra convs read the previous extra level.
        relu_before_extra_convs: apply ReLU to the input of every extra conv after the first (FCOS: True).
        upsample_mode: ``'nearest'`` or ``'bilinear'`` (align_corners=False) for the top-down path.
        attention: ``dict(type=<registered attention>, **kwargs)``: one module per output level (not shared)
            applied to that level's output, named ``attn.<level>``.
        in_strides: strides of the input maps (e.g. ``backbone.strides``); when given, ``self.strides`` holds
            the stride of each output (extra levels double the previous one).

    Attributes:
        out_channels: ``(out_channels,) * num_outs``.
        strides: stride of each output, or None when ``in_strides`` was not given.

    Shapes: ``forward(tuple of (N, in_channels[i], H_i, W_i))`` returns ``num_outs`` maps
    (N, out_channels, H_j, W_j): the used input levels' sizes, then each extra level
    ``floor((H - 1) / 2) + 1`` of the previous one.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: bool | str = False, relu_before_extra_convs: bool = False,
                 upsample_mode: str = 'nearest', attention: Mapping[str, Any] | None = None,
                 in_strides: Sequence[int] | None = None) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        num_ins = len(in_channels)
        if not 0 <= start_level < num_ins:
            raise ConfigError(f"FPN start_level {start_level} is outside 0..{num_ins - 1} "
                              f"({num_ins} input levels).")
        if end_level == -1 or end_level == num_ins - 1:
            self.backbone_end_level = num_ins
            if num_outs < num_ins - start_level:
                raise ConfigError(f"FPN num_outs={num_outs} is less than the {num_ins - start_level} input levels "
                                  f"used (from start_level {start_level}).")
        else:
            if not start_level <= end_level < num_ins:
                raise ConfigError(f"FPN end_level {end_level} is outside {start_level}..{num_ins - 1}.")
            self.backbone_end_level = end_level + 1
            if num_outs != end_level - start_level + 1:
                raise ConfigError(f"FPN with end_level={end_level} needs num_outs={end_level - start_level + 1}, "
                                  f"got {num_outs}.")
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, *EXTRA_CONV_MODES):
            raise ConfigError(f"FPN add_extra_convs must be False, True or one of "
                              f"{', '.join(repr(m) for m in EXTRA_CONV_MODES)}; got {add_extra_convs!r}.")
        if upsample_mode not in ('nearest', 'bilinear'):
            raise ConfigError(f"FPN upsample_mode must be 'nearest' or 'bilinear', got {upsample_mode!r}.")
        if in_strides is not None and len(in_strides) != num_ins:
            raise ConfigError(f"FPN in_strides {tuple(in_strides)} must have one entry per input level ({num_ins}).")

        self.in_channels = tuple(in_channels)
        self.num_ins = num_ins
        self.num_outs = num_outs
        self.start_level = start_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_mode = upsample_mode
        self.out_channels: tuple[int, ...] = (out_channels,) * num_outs

        used = range(start_level, self.backbone_end_level)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(in_channels[i], out_channels, 1) for i in used)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in used)
        num_extra = num_outs - len(used)
        self.extra_convs = nn.ModuleList()
        if add_extra_convs:
            for k in range(num_extra):
                src = in_channels[self.backbone_end_level - 1] if k == 0 and add_extra_convs == 'on_input' \
                    else out_channels
                self.extra_convs.append(nn.Conv2d(src, out_channels, 3, stride=2, padding=1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.attn = None
        if attention is not None:
            self.attn = nn.ModuleList(build_attention(dict(attention), out_channels) for _ in range(num_outs))

        self.strides: tuple[int, ...] | None = None
        if in_strides is not None:
            strides = [int(in_strides[i]) for i in used]
            while len(strides) < num_outs:
                strides.append(strides[-1] * 2)
            self.strides = tuple(strides)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``num_ins`` maps (N, in_channels[i], H_i, W_i), finest first -> ``num_outs`` maps (N, out_channels, ., .)."""
        if len(inputs) != self.num_ins:
            raise ValueError(f"FPN expects {self.num_ins} input maps with channels {self.in_channels}, "
                             f"got {len(inputs)}.")
        got = tuple(int(x.shape[1]) if x.dim() == 4 else -1 for x in inputs)
        if got != self.in_channels:
            shapes = ', '.join(str(tuple(x.shape)) for x in inputs)
            raise ValueError(f"FPN expects 4-D maps with channels {self.in_channels}, got shapes {shapes}.")
        laterals = [conv(inputs[self.start_level + i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            size = laterals[i - 1].shape[-2:]
            up = F.interpolate(laterals[i], size=size, mode=self.upsample_mode,
                               **({} if self.upsample_mode == 'nearest' else {'align_corners': False}))
            laterals[i - 1] = laterals[i - 1] + up
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        num_extra = self.num_outs - len(outs)
        if num_extra > 0:
            if not self.add_extra_convs:
                for _ in range(num_extra):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {'on_input': inputs[self.backbone_end_level - 1], 'on_lateral': laterals[-1],
                          'on_output': outs[-1]}[self.add_extra_convs]
                outs.append(self.extra_convs[0](source))
                for conv in self.extra_convs[1:]:
                    outs.append(conv(F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        if self.attn is not None:
            outs = [attn(out) for attn, out in zip(self.attn, outs)]
        return tuple(outs)
