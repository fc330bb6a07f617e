"""The base class of every attention module: input checks, the identity-init residual and map recording.

Every module computes ``attend(x)`` and the base class joins it to the input:

* gating modules (``residual = 'gate'``: se, eca, cbam, coord, simam, gc, mhsa) return the module's full
  output ``f(x)``; with ``identity_init=True`` the result is ``x + gamma * (f(x) - x)`` with a learnable
  scalar ``gamma = 0``, so the module starts as the exact identity and ``d out / d gamma = f(x) - x``
  is non-zero;
* residual modules (``residual = 'add'``: nonlocal, danet_pam, danet_cam, criss_cross) return a branch
  ``g(x)`` and the result is ``x + gamma * g(x)`` (``gamma = 0`` with ``identity_init=True``; the DANet
  and CCNet modules always carry their paper's ``gamma``, starting at 1 without ``identity_init``).

The output keeps the input's memory format (channels_last in, channels_last out) without copying
back to NCHW.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = ['AttentionModule', 'memory_format_of']


def memory_format_of(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` for an NHWC-strided 4-D tensor, else ``torch.contiguous_format``."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class AttentionModule(nn.Module):
    """Shared plumbing of the attention modules.

    Args:
        channels: input (= output) channels C.
        identity_init: make the module the exact identity at initialisation (learnable ``gamma = 0``).

    Subclasses implement ``attend(x) -> Tensor`` and may override ``shortcut(x)`` (the identity path;
    ``mhsa`` with ``stride=2`` average-pools it).
    """

    residual: ClassVar[str] = 'gate'  # 'gate': attend() is the full output; 'add': attend() is a residual branch
    paper_gamma: ClassVar[bool] = False  # the paper's module has a learnable gamma (DANet, CCNet)

    def __init__(self, channels: int, *, identity_init: bool = False) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f'{type(self).__name__} needs a positive integer channel count, got {channels!r}.')
        self.channels = channels
        self.identity_init = bool(identity_init)
        self._recorder = None  # set only inside attnkit.attention.record(); a plain attribute check when off
        if identity_init or self.paper_gamma:
            self.gamma = nn.Parameter(torch.full((), 0.0 if identity_init else 1.0))
        else:
            self.register_parameter('gamma', None)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is (N, channels, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f'{type(self).__name__} expects input (N, {self.channels}, H, W), '
                             f'got {tuple(x.shape)}.')

    def attend(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """The module's output (``residual='gate'``) or residual branch (``residual='add'``)."""
        raise NotImplementedError

    def shortcut(self, x: Tensor) -> Tensor:
        """The identity path the output is blended with (same shape as ``attend(x)``)."""
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (N, C, H, W). Returns: (N, C, H', W') in x's memory format (H' = H unless strided)."""
        self.check_input(x)
        y = self.attend(x)
        gamma = self.gamma
        if self.residual == 'gate':
            if gamma is not None:
                identity = self.shortcut(x)
                y = identity + gamma.to(y.dtype) * (y - identity)
        else:
            identity = self.shortcut(x)
            y = identity + (y if gamma is None else gamma.to(y.dtype) * y)
        fmt = memory_format_of(x)
        if not y.is_contiguous(memory_format=fmt):
            y = y.contiguous(memory_format=fmt)
        return y

    def record_map(self, value: Tensor, suffix: str = '') -> None:
        """Store ``value`` (detached) under this module's name (+ suffix) while recording."""
        if self._recorder is not None:
            self._recorder.put(value, suffix)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, identity_init={self.identity_init}'
