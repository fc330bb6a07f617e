"""The GC block's ``'add'`` term through the native CPU kernel (:mod:`attnkit.deploy.kernels`, ``gc_cpu.c``).

With stock torch ops the term ``gamma * T_a(c)``, ``c = sum_p softmax_p(w . x_p + b) x_p``, costs two
matrix-vector reads of the map (the logits, then the weighted sum; small bf16 products are slow on the CPU), a
softmax and some twenty small ops on (N, C) vectors per block. The kernel computes it in one call: an online
softmax over tiles of positions reads the channels_last map once, and the transform
``Linear -> LayerNorm -> ReLU -> Linear`` runs on the resulting vector in fp32 (:class:`GCTerms` holds its weights,
with a bottleneck's 1x1 expansion folded into the logit vector and the first layer when the statistics are read
from the expansion's input).

Maps: float32 or bfloat16, channels_last-contiguous, on the CPU (:func:`~attnkit.deploy.kernels.map_accepts`).
Everything is fp32 inside; the result equals the stock path within float rounding.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels import MAP_DTYPES, NativeKernel, native_kernel, ptr

__all__ = ['GCTerms', 'GCKernel', 'gc_kernel']

_P, _L, _F, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int  # argtypes


@dataclass(frozen=True)
class GCTerms:
    """The fp32, contiguous weights of one GC form's ``'add'`` term as the kernel reads them.

    Attributes:
        logit: (C,) the logit weight ``w`` (through an expansion ``W z + b``: ``w W``, C = C_in).
        logit_bias: ``b`` (through an expansion: ``w . b + b_logit``).
        first: (R, C) the transform's first layer (through an expansion: ``W1 W``).
        first_bias: (R,) (through an expansion: ``W1 b + b1``), or None.
        norm_weight, norm_bias: (R,) the LayerNorm's affine; norm_eps its epsilon.
        second: (D, R) and second_bias (D,) or None: the transform's last layer.
        gamma: the block's frozen gamma (1 without one).
    """

    logit: Tensor
    logit_bias: float
    first: Tensor
    first_bias: Tensor | None
    norm_weight: Tensor
    norm_bias: Tensor
    norm_eps: float
    second: Tensor
    second_bias: Tensor | None
    gamma: float

    def __post_init__(self) -> None:
        """The kernel reads raw fp32 memory: every tensor must be fp32, contiguous and on the CPU."""
        for name in ('logit', 'first', 'first_bias', 'norm_weight', 'norm_bias', 'second', 'second_bias'):
            t = getattr(self, name)
            if t is not None and (t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != 'cpu'):
                raise ValueError(f'GCTerms.{name}: the kernel needs a contiguous float32 CPU tensor, got '
                                 f'{t.dtype} on {t.device} (contiguous: {t.is_contiguous()})')


class GCKernel(NativeKernel):
    """The loaded ``gc_cpu`` library; :meth:`shift` computes a GC form's ``'add'`` term from a map."""

    name = 'gc_cpu'

    def bind(self, lib: ctypes.CDLL) -> None:
        lib.gc_shift.argtypes = [_P, _I, _L, _L, _L, _P, _F, _P, _P, _L, _P, _P, _F, _P, _P, _L, _F, _P, _I]

    def shift(self, x: Tensor, terms: GCTerms) -> Tensor:
        """x (N, C, H, W) channels_last fp32/bf16 -> ``gamma * T_a(c)`` (N, D) fp32, with C = ``terms.logit``'s
        length and D the last layer's width."""
        n, c, h, w = x.shape
        r, d = terms.first.shape[0], terms.second.shape[0]
        if terms.logit.numel() != c or terms.first.shape[1] != c or terms.second.shape[1] != r:
            raise ValueError(f'GCKernel.shift: a ({n}, {c}, {h}, {w}) map against terms for {terms.logit.numel()} '
                             f'channels ({tuple(terms.first.shape)} -> {tuple(terms.second.shape)})')
        out = torch.empty(n, d)
        self.lib.gc_shift(x.data_ptr(), MAP_DTYPES[x.dtype], n, h * w, c, terms.logit.data_ptr(), terms.logit_bias,
                          terms.first.data_ptr(), ptr(terms.first_bias), r, terms.norm_weight.data_ptr(),
                          terms.norm_bias.data_ptr(), terms.norm_eps, terms.second.data_ptr(),
                          ptr(terms.second_bias), d, terms.gamma, out.data_ptr(), torch.get_num_threads())
        return out


def gc_kernel() -> GCKernel | None:
    """The GC kernel, built on first call (None where it cannot be: see
    :func:`attnkit.deploy.kernels.kernel_status` ``('gc_cpu')``)."""
    return native_kernel(GCKernel)  # type: ignore[return-value]
