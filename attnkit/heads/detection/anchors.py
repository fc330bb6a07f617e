"""Anchors per FPN level and the (dx, dy, dw, dh) box coder used by RetinaNet."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ['AnchorGenerator', 'encode_boxes', 'decode_boxes']

_CLAMP = math.log(1000.0 / 16)


class AnchorGenerator:
    """RetinaNet anchors: at every cell of level l, ``len(ratios) * scales_per_octave`` boxes of side
    ``stride_l * octave_base_scale * 2**(i / scales_per_octave)`` and aspect ratio h/w = r, centred on the cell.

    Args:
        strides: one per level.
        ratios: height/width ratios.
        octave_base_scale, scales_per_octave: anchor sizes relative to the stride.
    """

    def __init__(self, strides: Sequence[int] = (8, 16, 32, 64, 128), ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 octave_base_scale: float = 4.0, scales_per_octave: int = 3) -> None:
        self.strides = tuple(int(s) for s in strides)
        scales = torch.tensor([octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
        h_ratios = torch.tensor(ratios, dtype=torch.float32).sqrt()
        w_ratios = 1.0 / h_ratios
        # (A, 4) base anchors per unit stride, ratio-major like mmdet
        ws = (w_ratios[:, None] * scales[None]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None]).reshape(-1)
        self.base = torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], dim=1)
        self._base_on: dict[torch.device, Tensor] = {}  # self.base per device

    @property
    def num_anchors(self) -> int:
        return self.base.shape[0]

    def __call__(self, sizes: Sequence[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Per level, (H*W*A, 4) xyxy anchors ordered by row, column, anchor."""
        device = torch.device(device)
        base = self._base_on.get(device)
        if base is None:  # copied to a device once, not at every step (a host-to-device copy waits for the GPU)
            base = self._base_on[device] = self.base.to(device)
        out = []
        for (h, w), s in zip(sizes, self.strides):
            ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
            xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
            yy, xx = torch.meshgrid(ys, xs, indexing='ij')
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + base[None] * s).reshape(-1, 4))
        return out


def encode_boxes(gt: Tensor, anchors: Tensor) -> Tensor:
    """(K, 4) xyxy targets relative to (K, 4) anchors → (K, 4) deltas (dx, dy, log dw, log dh)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gw, gh = (gt[:, 2] - gt[:, 0]).clamp(min=1e-3), (gt[:, 3] - gt[:, 1]).clamp(min=1e-3)
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def decode_boxes(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Inverse of :func:`encode_boxes` (log sizes clamped to log(1000/16))."""
    deltas = deltas.float()
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    x = ax + deltas[:, 0] * aw
    y = ay + deltas[:, 1] * ah
    w = aw * deltas[:, 2].clamp(max=_CLAMP).exp()
    h = ah * deltas[:, 3].clamp(max=_CLAMP).exp()
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)
