"""DANet head (Fu et al., CVPR 2019): position (PAM) and channel (CAM) attention branches, fused by a sum.

The attention modules come from :mod:`attnkit.attention` (``danet_pam``, ``danet_cam``; SDPA, no HW×HW
matrix) and start as the identity (residual γ = 0), as in the paper. In training the head also returns each
branch's own prediction as an auxiliary output (``'pam'``, ``'cam'``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ...builder import build_attention
from ...registry import HEADS
from .base import BaseDecodeHead, ConvBNReLU

__all__ = ['DAHead']


@HEADS.register_module('danet')
class DAHead(BaseDecodeHead):
    """Dual attention head.

    Args:
        in_channels, channels, num_classes, in_index, ...: see :class:`BaseDecodeHead`.
        pam: position attention config (``dict(type='danet_pam', ...)``), built on ``channels``.
        cam: channel attention config (``dict(type='danet_cam')``).
        identity_init: build the attention modules with γ = 0 (identity at initialisation).
        aux_weight: loss weight of each branch's auxiliary prediction.

    Shapes:
        feats[in_index]: (N, C_in, h, w) -> ``{'seg': (N, K, h, w)}`` (+ ``'pam'``, ``'cam'`` in training).
    """

    def __init__(self, in_channels: int | Sequence[int], channels: int, num_classes: int,
                 pam: Mapping[str, Any] | str | None = 'danet_pam', cam: Mapping[str, Any] | str | None = 'danet_cam',
                 identity_init: bool = True, aux_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(in_channels, channels, num_classes, **kwargs)
        c_in = self.in_channels
        if not isinstance(c_in, int):
            raise ValueError("DAHead reads one feature: in_index must be an int.")
        if pam is None and cam is None:
            raise ValueError("DAHead needs at least one of pam and cam.")
        self.aux_weight = aux_weight
        self.branches = nn.ModuleDict()
        self.branch_cls = nn.ModuleDict()
        self.pam = self.cam = None
        for name, cfg in (('pam', pam), ('cam', cam)):
            if cfg is None:
                continue
            attn = build_attention(cfg, channels, identity_init=identity_init)
            setattr(self, name, attn)  # named decode_head.pam / decode_head.cam in attention records
            self.branches[name] = nn.ModuleDict({'in_conv': ConvBNReLU(c_in, channels, 3, norm=self.norm),
                                                 'out_conv': ConvBNReLU(channels, channels, 3, norm=self.norm)})
            self.branch_cls[name] = nn.Conv2d(channels, num_classes, 1)

    def loss_weights(self) -> dict[str, float]:
        weights = {'seg': self.loss_weight}
        weights.update({name: self.aux_weight for name in self.branches})
        return weights

    def forward(self, feats: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.select(feats)
        out: dict[str, torch.Tensor] = {}
        fused = None
        for name, branch in self.branches.items():
            feat = branch['out_conv'](getattr(self, name)(branch['in_conv'](x)))
            fused = feat if fused is None else fused + feat
            if self.training:
                out[name] = self.branch_cls[name](self.dropout(feat))
        out['seg'] = self.cls_seg(fused)
        return out
