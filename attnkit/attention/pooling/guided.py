"""Attention-guided pooling: a strided weighted average whose weights are a spatial attention module's map."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ...builder import build_attention
from ...errors import ConfigError
from ...registry import ATTENTION, POOLING
from ..record import Recorder
from .base import Downsampler, exp_weighted_pool, normalised_exp

__all__ = ['AttentionGuidedPool']

_EPS = 1e-6  # spatial maps are clamped to [_EPS, 1e30] before the log


class _Capture:
    """A stand-in recorder set on the inner attention module for one forward: keeps the map it writes under
    its own name *with* its graph (the pool's weights must be trained), and passes every map on to the
    recorder of an enclosing ``record()`` (if any), which detaches as usual."""

    __slots__ = ('outer', 'value')

    def __init__(self, outer: Recorder | None) -> None:
        self.outer = outer
        self.value: Tensor | None = None

    def put(self, value: Tensor, suffix: str = '') -> None:
        if suffix == '':
            self.value = value
        if self.outer is not None:
            self.outer.put(value, suffix)

    def query_index(self, height: int, width: int) -> int | None:
        return None if self.outer is None else self.outer.query_index(height, width)


@POOLING.register_module('guided')
class AttentionGuidedPool(Downsampler):
    """Weighted 3x3 / stride-2 average with weights from any registered *spatial* attention module.

    Mechanism: the attention module ``attention`` is run on the input and the map it records under its own
    name (the ``record()`` contract: cbam's spatial gate, coord's and simam's channel-mean gates, gc's
    context softmax, all (N, 1, H, W)) is captured *with its gradient* (the module's own output is not
    used). With ``a`` that map::

        w   = a ** gamma = exp(gamma * log a)          (identity_init=True: learnable gamma = 0)
        w   = a                                         (identity_init=False)
        out = sum_window(w * x) / sum_window(w)         (3x3 windows, stride 2, padding 1, per channel)

    At ``gamma = 0`` every weight is exactly 1 and the module is exactly average pooling over the valid
    positions (``F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)``); ``gamma`` then learns how sharply the
    attention map steers the pooling (``d out / d gamma`` is non-zero). ``a`` is clamped to >= 1e-6 before
    the log. A module whose recorded map is not (N, 1, H, W) (se, eca: channel weights; nonlocal, mhsa,
    ...: attention matrices) is refused at construction with a ConfigError naming the spatial ones.

    Args:
        channels: C.
        attention: config of a registered attention module (``dict(type='cbam', reduction=8)`` or a name),
            built for C channels.
        identity_init: learnable exponent ``gamma = 0`` (exact average pooling at init; default True).

    Shapes: (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)); recorded map: the weights ``w / max_hw w``
    (N, 1, H, W), and the inner module's own maps under its name (``<pool>.attention``).
    """

    def __init__(self, channels: int, *, attention: Mapping[str, Any] | str = 'cbam',
                 identity_init: bool = True) -> None:
        super().__init__(channels)
        cfg = {'type': attention} if isinstance(attention, str) else dict(attention)
        if cfg.get('identity_init'):
            raise ConfigError("guided pool: identity_init belongs to the pool (exponent gamma = 0), not to its "
                              f"attention module {cfg.get('type')!r} (whose gate is not used).")
        self.attention = build_attention(cfg, channels)
        self.identity_init = bool(identity_init)
        if identity_init:
            self.gamma = nn.Parameter(torch.zeros(()))
        else:
            self.register_parameter('gamma', None)
        self._check_spatial(cfg.get('type'))

    def _check_spatial(self, name: Any) -> None:
        """ConfigError unless the attention module records one (N, 1, H, W) map (a dry run on a 1x8x5x5 ramp)."""
        probe = torch.linspace(-1.0, 1.0, self.channels * 25).reshape(1, self.channels, 5, 5)
        was_training = self.attention.training
        self.attention.eval()
        try:
            with torch.no_grad():
                found = self._spatial_map(probe)
        finally:
            self.attention.train(was_training)
        if found is None or tuple(found.shape) != (1, 1, 5, 5):
            got = 'no map' if found is None else f'a map of shape {tuple(found.shape)}'
            spatial = [n for n in sorted(ATTENTION.module_dict) if n in ('cbam', 'coord', 'simam', 'gc')]
            raise ConfigError(f"guided pool needs a spatial attention module that records one (N, 1, H, W) "
                              f"map; {name!r} records {got} for a (1, {self.channels}, 5, 5) input. "
                              f"Spatial ones: {', '.join(spatial)}.")

    def _spatial_map(self, x: Tensor) -> Tensor | None:
        """The (N, 1, H, W) map the attention module records for ``x`` (with its graph), or what it records."""
        module = self.attention
        previous = module._recorder
        capture = _Capture(previous)
        module._recorder = capture
        try:
            module.attend(x)
        finally:
            module._recorder = previous
        return capture.value

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)), x's dtype and memory format."""
        self.check_input(x)
        a = self._spatial_map(x)
        if a is None:  # pragma: no cover - excluded at construction
            raise RuntimeError(f'{type(self.attention).__name__} recorded no map.')
        a = a.float()
        if self.gamma is None:
            weight = a.clamp_min(0)
        else:
            weight = normalised_exp(self.gamma.float() * torch.log(a.clamp(_EPS, 1e30)))
        if self.recording:
            self.record_map(weight / weight.amax((2, 3), keepdim=True).clamp_min(torch.finfo(weight.dtype).tiny))
        return exp_weighted_pool(x, weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, identity_init={self.identity_init}'
