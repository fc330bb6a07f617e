"""SE's channel gate through the native CPU kernel (:mod:`attnkit.deploy.kernels`, ``se_cpu.c``).

The gate ``1 - gamma + gamma * sigmoid(W2 relu(W1 mean_hw(x)))`` with stock ops is a mean over the map and five
small ops on (N, C) vectors; inside a network, between oneDNN's convolutions, torch's small fp32 products there
cost several times their time alone. The kernel takes the mean (one read of the channels_last map) and the MLP in
one call; the form applies the gate with the block's addition as before (one ``addcmul``).

Maps: float32 or bfloat16, channels_last-contiguous, on the CPU (:func:`~attnkit.deploy.kernels.map_accepts`).
Everything is fp32 inside; the gate equals the stock path's within float rounding.
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from .kernels import MAP_DTYPES, NativeKernel, native_kernel, ptr

__all__ = ['SEKernel', 'se_kernel']

_P, _L, _F, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int  # argtypes


class SEKernel(NativeKernel):
    """The loaded ``se_cpu`` library; :meth:`gate` computes an SE form's blended gate from a map."""

    name = 'se_cpu'

    def bind(self, lib: ctypes.CDLL) -> None:
        lib.se_gate.argtypes = [_P, _I, _L, _L, _L, _P, _P, _L, _P, _P, _F, _F, _P, _I]

    def gate(self, form: nn.Module, x: Tensor) -> Tensor:
        """x (N, C, H, W) channels_last fp32/bf16 -> the blended gate (N, C, 1, 1) fp32 of ``form`` (a
        :class:`~attnkit.deploy.attention_fast.FastSE`: its ``mlp_fp32`` weights, ``gamma``/``blend``)."""
        n, c, h, w = x.shape
        w1, b1, w2, b2 = form.mlp_fp32()
        gamma = float(form.gamma) if form.blend else 1.0
        out = torch.empty(n, c)
        self.lib.se_gate(x.data_ptr(), MAP_DTYPES[x.dtype], n, h * w, c, w1.data_ptr(), ptr(b1), w1.shape[0],
                         w2.data_ptr(), ptr(b2), gamma, 1.0 - gamma if form.blend else 0.0, out.data_ptr(),
                         torch.get_num_threads())
        return out[:, :, None, None]


def se_kernel() -> SEKernel | None:
    """The SE kernel, built on first call (None where it cannot be: see
    :func:`attnkit.deploy.kernels.kernel_status` ``('se_cpu')``)."""
    return native_kernel(SEKernel)  # type: ignore[return-value]
