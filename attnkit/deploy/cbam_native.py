"""CBAM's inference form through the native CPU kernel (:mod:`attnkit.deploy.kernels`, ``cbam_cpu.c``).

Stock torch ops need ``y = x * Mc`` as a tensor to take its statistics over channels, so the form costs seven
extra reads and two writes of the (N, C, H, W) map beyond the plain block's addition. The kernel makes three
passes over x, each one loop over a channels_last map viewed (N, HW, C):

1. the mean and the max over H x W per channel (one read);
2. with the channel gate ``Mc`` (the shared MLP between the passes, in the kernel too, fp32): the mean and the max
   over C of ``x * Mc`` per position, without writing ``y`` (one read); then the k x k spatial conv and its sigmoid
   on that tiny (N, 2, H, W) descriptor, as ``gamma * Ms``;
3. ``out = x * (Mc * gamma Ms + 1 - gamma) [+ identity] [relu]`` (one read of x and of identity, one write: the
   plain block's own pass).

Maps: float32 or bfloat16, channels_last-contiguous, on the CPU; statistics and gates are fp32 and bf16 is
rounded once, at the output. Anything else (NCHW, CUDA, autograd, tracing and compiling) takes the form's stock
path. Outputs equal the stock path within float rounding (~1e-6 relative in fp32).
"""
from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from .kernels import MAP_DTYPES, NativeKernel, native_kernel, ptr

__all__ = ['CBAMKernel', 'cbam_kernel']

_P, _L, _F, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int  # argtypes


class CBAMKernel(NativeKernel):
    """The loaded ``cbam_cpu`` library with its argument types; :meth:`run` computes one CBAM form's output."""

    name = 'cbam_cpu'

    def bind(self, lib: ctypes.CDLL) -> None:
        lib.channel_stats.argtypes = [_P, _I, _L, _L, _L, _P, _P, _I]
        lib.spatial_desc.argtypes = [_P, _I, _P, _L, _L, _L, _L, _L, _P, _I]
        lib.spatial_gate.argtypes = [_P, _P, _F, _L, _L, _L, _L, _L, _F, _P, _I]
        lib.tail.argtypes = [_P, _P, _I, _P, _P, _F, _L, _L, _L, _I, _P, _I]
        lib.channel_gate.argtypes = [_P, _L, _L, _P, _P, _L, _P, _P, _P, _P, _I]

    @staticmethod
    def spatial_conv_ok(conv: nn.Conv2d) -> bool:
        """The spatial conv is the kernel's: 2 -> 1 channels, odd square kernel k, stride 1, 'same' zero padding."""
        k = conv.kernel_size[0]
        return (conv.in_channels == 2 and conv.out_channels == 1 and conv.kernel_size == (k, k) and k % 2 == 1
                and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1) and conv.groups == 1
                and tuple(conv.padding) == (k // 2, k // 2) and conv.padding_mode == 'zeros')

    def run(self, form: nn.Module, x: Tensor, identity: Tensor | None, out: Tensor, relu: bool) -> Tensor:
        """``out = cbam_form(x) [+ identity] [relu]``; x, identity, out (N, C, H, W) channels_last, one dtype
        (``out`` may be x itself). ``form`` is a :class:`~attnkit.deploy.attention_fast.FastCBAM`: its channel MLP
        (``mlp_fp32``), ``spatial`` conv, ``gamma``/``blend``."""
        n, c, h, w = x.shape
        code, threads = MAP_DTYPES[x.dtype], torch.get_num_threads()
        stats = torch.empty(2 * n, c)  # rows: the N means, then the N maxima
        self.lib.channel_stats(x.data_ptr(), code, n, h * w, c, stats.data_ptr(),
                               stats.data_ptr() + n * c * stats.element_size(), threads)
        w1, b1, w2, b2 = form.mlp_fp32()
        # Mc (N, C) fp32: the shared MLP in the kernel too (torch's small fp32 products between the kernel's calls
        # cost several times their time alone, in a network)
        gate, hidden = torch.empty(n, c), torch.empty(2 * w1.shape[0])  # (kept alive across the call)
        self.lib.channel_gate(stats.data_ptr(), n, c, w1.data_ptr(), ptr(b1), w1.shape[0], w2.data_ptr(), ptr(b2),
                              gate.data_ptr(), hidden.data_ptr(), threads)
        conv = form.spatial
        k = conv.kernel_size[0]
        pad = k // 2
        desc = torch.zeros(n, 2, h + 2 * pad, w + 2 * pad)  # zero border = the conv's padding
        self.lib.spatial_desc(x.data_ptr(), code, gate.data_ptr(), n, h, w, c, pad, desc.data_ptr(), threads)
        weight = conv.weight.detach().float().contiguous()
        bias = 0.0 if conv.bias is None else float(conv.bias)
        gamma = float(form.gamma) if form.blend else 1.0
        spatial = torch.empty(n, h, w)  # gamma * Ms
        self.lib.spatial_gate(desc.data_ptr(), weight.data_ptr(), bias, n, h, w, k, pad, gamma, spatial.data_ptr(),
                              threads)
        self.lib.tail(x.data_ptr(), None if identity is None else identity.data_ptr(), code, gate.data_ptr(),
                      spatial.data_ptr(), 1.0 - gamma, n, h * w, c, int(relu), out.data_ptr(), threads)
        return out


def cbam_kernel() -> CBAMKernel | None:
    """The CBAM kernel, built on first call (None where it cannot be: see
    :func:`attnkit.deploy.kernels.kernel_status` ``('cbam_cpu')``)."""
    return native_kernel(CBAMKernel)  # type: ignore[return-value]
