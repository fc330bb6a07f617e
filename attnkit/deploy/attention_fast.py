"""Inference forms of the gating attention modules: the same function in fewer passes over the feature map.

An attention module with a learnable ``gamma`` (identity init, trained) computes
``out = x + gamma * (f(x) - x)`` (:class:`attnkit.attention.base.AttentionModule`). Eagerly that is
``attend`` (two to four full-size elementwise passes, each into a freshly allocated tensor), then a subtraction,
a multiplication and an addition over the full (N, C, H, W) map. Where the module is a gate,
``f(x) = x * a`` with a small gate ``a``, the blend folds into the gate:

* channel gates (``se``, ``eca``, ``gc`` with ``'scale'``): ``out = x * (1 - gamma + gamma * a)`` with ``a``
  (N, C): one pass over ``x``;
* ``gc`` with ``'add'``: ``out = x + gamma * t`` with ``t`` (N, C): one pass;
* ``cbam`` (``y = x * Mc``, ``f = y * Ms``): ``out = y * (gamma * Ms) + (1 - gamma) * x``, computed in place in
  ``y``'s buffer (``mul_``, ``addcmul_``): after ``y``, two in-place passes instead of five allocating ones;
  the timm layout's spatial BatchNorm is folded into the spatial conv;
* ``coord`` (``f = x * a_h * a_w``): ``y = x * a_h``, then ``y *= gamma * a_w``, ``y += (1 - gamma) * x`` in place;
  for a channels_last map the H/W pooling and the gating run in its (N, H, W, C) view, where eager's NCHW-style
  reductions over W or H are strided (about 30x slower at 512 x 64 x 64).

Statistics (means, maxima, the MLPs) are computed exactly as in eager mode; only the order of the final
multiplications changes, so outputs equal eager within float rounding (a few 1e-7 relative). ``gamma`` is a
frozen 0-dim buffer (not a Python float), so ``torch.compile`` of these forms does not specialise on its value.

Inference forms do not record attention maps (``attnkit.attention.record``) and have no autograd-relevant
parameters beyond the source module's (shared, not copied, except the timm CBAM spatial conv with its BN folded).

:func:`inference_form` returns the form of a module (or None when there is none); :data:`INFERENCE_FORMS`
maps each attention class to its converter.

In place (``form.inplace = True``, set by :func:`allow_inplace` on the fast path): a form whose input nobody
else reads writes its output into the input's buffer instead of a new tensor -- ``x.mul_(gate)`` rather than
``x * gate`` (about 2-3x cheaper on a 512 x 64 x 64 map here: no new buffer to fill). That holds for a form
attached after a convolution, a normalisation layer, a norm folded into its convolution, or an attnkit ResNet
block (their output is a new tensor that only the attention reads); never for a form attached ``before`` a
module, called by its parent, or attached after any other module. Channel gates (``se``, ``eca``, ``gc``) run in
place with or without ``gamma``; ``cbam`` and ``coord`` only without one (their blend needs ``x`` after ``f``).
Only float32/float64 maps are written in place: for bf16 maps (the fast path's bf16 autocast) the in-place
broadcast multiply is the slower one on the CPU, so they get a new tensor.

Means over H x W use the average-pooling kernel (:func:`hw_mean`), other means are sums times 1/n
(:func:`mean_over`): torch's bf16 ``mean`` on the CPU is 5-9x slower than its ``sum``, and its ``sum`` over H x W
of a channels_last map 2x slower than the pooling kernel.

Residual tails (:meth:`InferenceGate.forward_residual`, used by :mod:`attnkit.deploy.residual_tail`): a form placed
before a ResNet block's residual addition computes ``relu(form(x) + identity)`` itself, in one pass fewer.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention.base import AttentionModule, memory_format_of
from ..attention.cbam import CBAMModule
from ..attention.coord import CoordAttention
from ..attention.eca import ECAModule
from ..attention.gc import GlobalContextBlock
from ..attention.se import SEModule, linear
from .cbam_native import CBAMKernel
from .gc_native import GCKernel, GCTerms
from .se_native import SEKernel
from .map_stats import (channel_dot, expanded_weighted_sum, expansion_pays, expansion_weight, hw_mean,
                        hw_weighted_sum, mean_over, run_expansion)

__all__ = ['InferenceGate', 'FastSE', 'FastECA', 'FastCBAM', 'FastGC', 'FastCoord', 'INFERENCE_FORMS',
           'inference_form', 'swap_inference_forms', 'allow_inplace', 'hw_mean', 'mean_over']


# dtypes whose in-place broadcast multiply is the faster one on the CPU: for bf16 maps x.mul_(gate) took 2x the
# time of x * gate here (torch 2.14, AVX512-BF16), so bf16 forms write a new tensor even where allowed in place
_INPLACE_DTYPES = (torch.float32, torch.float64)


_NO_CHANGE = contextlib.nullcontext()


def fp32_gate_math(x: Tensor) -> ContextManager[Any]:
    """A context in which the forms' small gate layers (MLPs, ECA's conv1d, GC's transforms) run in fp32: autocast
    off on x's device (a no-op context when autocast is off there). Their inputs are (N, C) vectors: in bf16 each
    tiny matrix product costs 18-30 us on the CPU against 3-8 us in fp32 (torch 2.14, AVX512-BF16), 4-6x, and
    :func:`~attnkit.deploy.fast.cast_weights_bf16` leaves the forms' weights in fp32."""
    device = x.device.type
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else _NO_CHANGE


class InferenceGate(nn.Module):
    """Base of the inference forms: the source's ``gamma`` frozen (1 without one), the source's name.

    Buffers: ``gamma`` and ``one_minus_gamma`` (0-dim, float32). ``blend``: the source has a ``gamma`` (without
    one, its output is ``f(x)`` itself and the forms skip the blend).
    """

    source_type: str = ''
    # the form has a residual tail (forward_residual) that saves passes over the map (fuse_residual_tails)
    fuses_residual: bool = False

    def __init__(self, module: AttentionModule) -> None:
        super().__init__()
        self.channels = module.channels
        gamma = module.gamma
        self.blend = gamma is not None
        g = torch.ones(()) if gamma is None else gamma.detach().float().reshape(()).clone()
        self.register_buffer('gamma', g)
        self.register_buffer('one_minus_gamma', 1 - g)
        self.inplace = False  # write into x's buffer (allow_inplace: only where nobody else reads x)
        # run the formulation written for torch.compile (set by swap_inference_forms(for_compiler=True))
        self.for_compiler = False

    @property
    def can_run_inplace(self) -> bool:
        """Whether the form can write its output into x's buffer (not when its blend reads x after ``f``)."""
        return True

    def _in_place(self, x: Tensor) -> bool:
        """Write into x's buffer: allowed (``inplace``) and faster for x's dtype (:data:`_INPLACE_DTYPES`)."""
        return self.inplace and x.dtype in _INPLACE_DTYPES

    def _gate(self, x: Tensor, gate: Tensor) -> Tensor:
        """``x * gate`` (broadcast; the gate cast to x's dtype), into x's buffer when :meth:`_in_place`."""
        gate = gate.to(x.dtype)
        return x.mul_(gate) if self._in_place(x) else x * gate

    def _blend_gate(self, a: Tensor) -> Tensor:
        """Channel gate (N, C) -> the blended gate ``1 - gamma + gamma * a`` (N, C, 1, 1)."""
        if not self.blend:
            return a[:, :, None, None]
        return torch.addcmul(self.one_minus_gamma.to(a.dtype), a, self.gamma.to(a.dtype))[:, :, None, None]

    def forward_residual(self, x: Tensor, identity: Tensor) -> Tensor:
        """``relu(self(x) + identity)``: the form on a block's residual branch, the addition and the ReLU.

        x, identity (N, C, H, W) -> (N, C, H, W), a new tensor (neither input is written). Forms with
        ``fuses_residual`` compute it in fewer passes over the map (see :func:`fuse_residual_tails`).
        """
        out = self(x.clone() if self._in_place(x) else x)  # this fallback saves nothing; it keeps x unwritten
        return F.relu(out + identity)

    # the form has forward_expansion(z, conv, identity): ``relu(self(conv(z)) + identity)`` with its statistics read
    # through a bottleneck's 1x1 expansion (conv3's input z, a quarter of the map; attnkit.deploy.map_stats)
    reads_expansion: bool = False

    def extra_repr(self) -> str:
        gamma = f'{float(self.gamma):.4g}' if self.blend else 'none'
        return f'{self.source_type}, channels={self.channels}, gamma={gamma}' + (', inplace' if self.inplace else '')


def gated_residual(x: Tensor, gate: Tensor, identity: Tensor) -> Tensor:
    """``relu(x * gate + identity)`` as ``addcmul`` + in-place ReLU: two passes over the map, the plain block's
    ``relu(x + identity)`` count, instead of three (``x * gate``, ``+ identity``, ReLU). x, identity (N, C, H, W),
    gate broadcastable ((N, C, 1, 1) or (N, 1, H, W)) -> a new (N, C, H, W) tensor."""
    return torch.addcmul(identity, x, gate.to(x.dtype)).relu_()


class SharedMLPWeights:
    """Mixin of the forms with a two-layer channel MLP (``fc1``, ``fc2``: ``nn.Linear`` or timm's 1x1 convs) that
    a native kernel reads."""

    fc1: nn.Module
    fc2: nn.Module

    def mlp_fp32(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """The shared MLP as contiguous fp32 (R, C) and (C, R) weights and their biases (or None), for the native
        kernel; computed once per version of the weights (not part of the state dict)."""
        tensors = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors if t is not None)
        cached = self.__dict__.get('_mlp_cache')
        if cached is None or cached[0] != key:
            with torch.no_grad():
                fp32 = tuple(None if t is None else t.detach().float().flatten(1 if t.dim() > 1 else 0).contiguous()
                             for t in tensors)
            cached = self.__dict__['_mlp_cache'] = (key, fp32)
        return cached[1]


class FastSE(SharedMLPWeights, InferenceGate):
    """``se`` as ``x * (1 - gamma + gamma * sigmoid(fc2(relu(fc1(mean_hw x)))))``. x (N, C, H, W) -> same."""

    source_type = 'se'
    fuses_residual = True
    kernel_binding = SEKernel  # the native kernel use_native_kernels hands to use_native

    def __init__(self, module: SEModule) -> None:
        super().__init__(module)
        self.fc1, self.fc2 = module.fc1, module.fc2
        # the native CPU kernel (attnkit.deploy.se_native), set by use_native_kernels on the fast path
        self.native: SEKernel | None = None

    def use_native(self, kernel: SEKernel | None) -> bool:
        """Compute the gate through ``kernel`` where the input allows (:meth:`SEKernel.accepts`)."""
        self.native = kernel
        return kernel is not None

    def _gate_of(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> the blended gate (N, C, 1, 1) fp32: through the kernel where it takes x."""
        if self.native is not None and self.native.accepts(x):
            return self.native.gate(self, x)
        return self._gate_of_mean(hw_mean(x))

    def _gate_of_mean(self, mean: Tensor) -> Tensor:
        """The H x W mean (N, C) -> the blended gate (N, C, 1, 1), in fp32."""
        with fp32_gate_math(mean):
            return self._blend_gate(torch.sigmoid(linear(self.fc2, F.relu(linear(self.fc1, mean.float())))))

    def forward(self, x: Tensor) -> Tensor:
        return self._gate(x, self._gate_of(x))

    def forward_residual(self, x: Tensor, identity: Tensor) -> Tensor:
        return gated_residual(x, self._gate_of(x), identity)


class FastECA(InferenceGate):
    """``eca`` as ``x * (1 - gamma + gamma * sigmoid(conv1d(mean_hw x)))``. x (N, C, H, W) -> same."""

    source_type = 'eca'
    fuses_residual = True

    def __init__(self, module: ECAModule) -> None:
        super().__init__(module)
        self.conv = module.conv

    def _gate_of_mean(self, mean: Tensor) -> Tensor:
        """The H x W mean (N, C) -> the blended gate (N, C, 1, 1), in fp32."""
        with fp32_gate_math(mean):
            return self._blend_gate(torch.sigmoid(self.conv(mean.float().unsqueeze(1))).squeeze(1))

    def forward(self, x: Tensor) -> Tensor:
        return self._gate(x, self._gate_of_mean(hw_mean(x)))

    def forward_residual(self, x: Tensor, identity: Tensor) -> Tensor:
        return gated_residual(x, self._gate_of_mean(hw_mean(x)), identity)


class FastCBAM(SharedMLPWeights, InferenceGate):
    """``cbam``: channel gate, spatial statistics of ``y = x * Mc``, then ``y * (gamma Ms) + (1 - gamma) x`` in place.

    x (N, C, H, W) -> (N, C, H, W) in x's memory format.
    """

    source_type = 'cbam'
    fuses_residual = True
    kernel_binding = CBAMKernel  # the native kernel use_native_kernels hands to use_native

    def __init__(self, module: CBAMModule) -> None:
        super().__init__(module)
        self.fc1, self.fc2 = module._mlp()
        if module.layout == 'timm':  # conv (no bias) + BatchNorm(1) -> one conv with bias
            from .fold import fuse_conv_norm
            conv = copy.deepcopy(module.spatial['conv']['conv'])
            fuse_conv_norm(conv, module.spatial['conv']['bn'])
            self.spatial = conv
        else:
            self.spatial = module.spatial
        # the native CPU kernel (attnkit.deploy.cbam_native), set by use_native_kernels on the fast path
        self.native: CBAMKernel | None = None

    @property
    def can_run_inplace(self) -> bool:
        return not self.blend  # the blend reads x after the gates

    def use_native(self, kernel: CBAMKernel | None) -> bool:
        """Run through ``kernel`` where the input allows (:meth:`CBAMKernel.accepts`); False (and unchanged) when
        the spatial conv is not the kernel's (2 -> 1 channels, odd k x k, stride 1, 'same' zero padding)."""
        if kernel is not None and not kernel.spatial_conv_ok(self.spatial):
            return False
        self.native = kernel
        return kernel is not None

    def _channel_gate(self, pooled: Tensor, n: int) -> Tensor:
        """(2N, C) mean and max pooled rows -> Mc (N, C), in fp32: both paths through one MLP call."""
        with fp32_gate_math(pooled):
            logits = linear(self.fc2, F.relu(linear(self.fc1, pooled.float())))
            return torch.sigmoid(logits[:n] + logits[n:])

    def _spatial_gate(self, desc: Tensor) -> Tensor:
        """(N, 2, H, W) mean/max descriptor -> Ms (N, 1, H, W)."""
        # the (N, 2, H, W) map is tiny: in NCHW (map and 2x1x7x7 weight, even after model.to(channels_last)) the
        # conv avoids oneDNN's channels_last reorders, 5x faster here
        conv = self.spatial
        return torch.sigmoid(F.conv2d(desc.contiguous(), conv.weight.contiguous(), conv.bias, conv.stride,
                                      conv.padding, conv.dilation, conv.groups))

    def _gates(self, x: Tensor, in_place: bool) -> tuple[Tensor, Tensor]:
        """x (N, C, H, W) -> (``y = x * Mc``, into x's buffer when ``in_place``; Ms (N, 1, H, W))."""
        n = x.shape[0]
        # max over H x W by the max-pooling kernel: 2x faster than amax((2, 3)) on a bf16 channels_last map here
        # (0.21-0.24 vs 0.43-0.47 ms at 512 x 64 x 64; fp32 0.44 vs 0.53), the same values
        hw_max = F.adaptive_max_pool2d(x, 1).flatten(1)
        channel = self._channel_gate(torch.cat([hw_mean(x), hw_max], 0), n).to(x.dtype)  # (N, C)
        y = x.mul_(channel[:, :, None, None]) if in_place else x * channel[:, :, None, None]
        desc = torch.cat([mean_over(y, 1, keepdim=True), y.amax(1, keepdim=True)], 1)  # (N, 2, H, W), small
        return y, self._spatial_gate(desc)

    def forward(self, x: Tensor) -> Tensor:
        if self.for_compiler:
            return self._forward_flat(x)
        if self.native is not None and self.native.accepts(x):  # the kernel reads x before writing each element
            return self.native.run(self, x, None, x if self.inplace else torch.empty_like(x), relu=False)
        y, spatial = self._gates(x, self._in_place(x))
        if not self.blend:
            return y.mul_(spatial.to(y.dtype))
        y.mul_((spatial * self.gamma.to(spatial.dtype)).to(y.dtype))
        return y.addcmul_(x, self.one_minus_gamma.to(y.dtype))

    def forward_residual(self, x: Tensor, identity: Tensor) -> Tensor:
        """``relu(y * (gamma Ms) + (1 - gamma) x + identity)`` with ``y = x * Mc``: after ``y``, the blend and
        the addition in two passes written into y's buffer, then the ReLU (one pass fewer than the form followed by
        the block's addition)."""
        if self.native is not None and self.native.accepts(x, identity):
            return self.native.run(self, x, identity, torch.empty_like(x), relu=True)
        y, spatial = self._gates(x, False)
        if not self.blend:
            return torch.addcmul(identity, y, spatial.to(y.dtype), out=y).relu_()
        torch.addcmul(identity, y, (spatial * self.gamma.to(spatial.dtype)).to(y.dtype), out=y)
        return y.addcmul_(x, self.one_minus_gamma.to(y.dtype)).relu_()

    def _forward_flat(self, x: Tensor) -> Tensor:
        """The same function out of place on the map as a 3-D view with its innermost dim last, for inductor.

        channels_last x is viewed (N, HW, C), NCHW x (N, C, HW): every reduction and gate is then over one
        plain dim of a contiguous view, which inductor fuses into about three passes (the two H×W reductions in
        one read, the channel-gated C reductions in one read without writing ``y``, the output in one read and
        one write). On one 512 x 64 x 64 map in cache, compiled: 1.2-1.5 ms, against 2.6-4.4 ms for
        :meth:`forward` eager and 5.9 ms for :meth:`forward` compiled (its in-place ops and 4-D reductions defeat
        the fusion); inside a network, where maps come from memory, the gain is smaller (docs/deploy.md).
        Output in x's memory format.
        """
        n, c, h, w = x.shape
        nhwc = memory_format_of(x) == torch.channels_last
        flat = x.permute(0, 2, 3, 1).reshape(n, h * w, c) if nhwc else x.reshape(n, c, h * w)
        cdim, sdim = (2, 1) if nhwc else (1, 2)  # plain mean here: inductor writes its own reductions
        channel = self._channel_gate(torch.cat([flat.mean(sdim), flat.amax(sdim)], 0), n)  # (N, C)
        y = flat * channel.to(x.dtype).unsqueeze(sdim)
        desc = torch.stack([y.mean(cdim), y.amax(cdim)], 1).reshape(n, 2, h, w)
        spatial = self._spatial_gate(desc).reshape(n, h * w).unsqueeze(cdim).to(x.dtype)  # (N, 1, HW) / (N, HW, 1)
        out = y * (spatial * self.gamma.to(x.dtype)) + flat * self.one_minus_gamma.to(x.dtype) if self.blend \
            else y * spatial
        return out.reshape(n, h, w, c).permute(0, 3, 1, 2) if nhwc else out.reshape(n, c, h, w)


class FastGC(InferenceGate):
    """``gc``: context vector as eager, fused as ``x * (1 - gamma + gamma sigmoid(T_s c)) + gamma T_a c``.

    x (N, C, H, W) -> (N, C, H, W).
    """

    source_type = 'gc'
    kernel_binding = GCKernel  # the native kernel use_native_kernels hands to use_native

    def __init__(self, module: GlobalContextBlock) -> None:
        super().__init__(module)
        self.context_logits = module.context_logits
        self.transform_add = module.transform_add
        self.transform_scale = module.transform_scale
        # the native CPU kernel (attnkit.deploy.gc_native), set by use_native_kernels on the fast path
        self.native: GCKernel | None = None

    def use_native(self, kernel: GCKernel | None) -> bool:
        """Compute the ``'add'`` term through ``kernel`` where the input allows (:meth:`GCKernel.accepts`); False
        (and unchanged) for a ``'scale'`` fusion or a transform that is not ``Linear, LayerNorm, ReLU, Linear``."""
        t = self.transform_add
        layers = (nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear)
        if kernel is not None and (self.transform_scale is not None or t is None or len(t) != 4
                                   or any(type(m) is not k for m, k in zip(t, layers))
                                   or tuple(t[1].normalized_shape) != (t[0].out_features,)):
            return False
        self.native = kernel
        return kernel is not None

    def _native_terms(self, conv: nn.Conv2d | None) -> GCTerms:
        """The kernel's weights (:class:`GCTerms`) for statistics read from the map (``conv`` None) or from the
        input z of the 1x1 expansion ``conv`` (``x = W z + b``: the logit vector ``w W``, the first layer ``W1 W``).
        Computed once per version of the weights involved; not part of the state dict."""
        first, norm, _, second = self.transform_add
        logit_w, logit_b = self._logit_weight()
        tensors = (logit_w, logit_b, first.weight, first.bias, norm.weight, norm.bias, second.weight, second.bias,
                   self.gamma) + (() if conv is None else (conv.weight, conv.bias))
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors if t is not None)
        cache = self.__dict__.setdefault('_native_cache', {})
        hit = cache.get(conv is None)
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.no_grad(), fp32_gate_math(logit_w):  # autocast would round the folded products to bf16
            v = logit_w.detach().float().reshape(-1)
            vb = 0.0 if logit_b is None else float(logit_b)
            w1 = first.weight.detach().float()
            b1 = None if first.bias is None else first.bias.detach().float()
            if conv is not None:
                weight = expansion_weight(conv).detach().float()
                if conv.bias is not None:
                    bias = conv.bias.detach().float()
                    vb += float(v @ bias)
                    b1 = w1 @ bias if b1 is None else b1 + w1 @ bias
                v, w1 = v @ weight, w1 @ weight
            r = w1.shape[0]
            terms = GCTerms(
                logit=v.contiguous(), logit_bias=vb, first=w1.contiguous(),
                first_bias=None if b1 is None else b1.contiguous(),
                norm_weight=torch.ones(r) if norm.weight is None else norm.weight.detach().float().contiguous(),
                norm_bias=torch.zeros(r) if norm.bias is None else norm.bias.detach().float().contiguous(),
                norm_eps=float(norm.eps), second=second.weight.detach().float().contiguous(),
                second_bias=None if second.bias is None else second.bias.detach().float().contiguous(),
                gamma=float(self.gamma) if self.blend else 1.0)
        cache[conv is None] = (key, terms)
        return terms

    def _native_shift(self, x: Tensor, conv: nn.Conv2d | None = None) -> Tensor | None:
        """The ``'add'`` term (N, C, 1, 1) fp32 through the kernel from x (the map, or the expansion's input when
        ``conv`` is given), or None where the kernel does not take x."""
        if self.native is None or not self.native.accepts(x):
            return None
        return self.native.shift(x, self._native_terms(conv))[:, :, None, None]

    @property
    def fuses_residual(self) -> bool:  # type: ignore[override]
        """With a ``'scale'`` fusion (the gate joins the residual addition); ``'add'`` alone saves no pass here (it
        does through a bottleneck's conv3: :meth:`forward_expansion`)."""
        return self.transform_scale is not None

    reads_expansion = True

    def _expansion_fp32(self, conv: nn.Conv2d) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """The expansion's weight W (C, C_in) and bias b (or None) in fp32, and the logit conv read through it:
        ``v W`` (1, C_in) and ``v . b + c`` (1,) or None. Computed once per version of these weights (small matrix
        products in bf16 cost 4-6x their fp32 time on the CPU here, and none depends on the input); the fp32 W is
        the weight itself when stored in fp32. Not part of the state dict."""
        logit_w, logit_b = self._logit_weight()
        tensors = (conv.weight, conv.bias, logit_w, logit_b)
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors if t is not None)
        cached = getattr(self, '_expansion_cache', None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = expansion_weight(conv).detach().float()
                bias = None if conv.bias is None else conv.bias.detach().float()
                v = logit_w.detach().float()
                shift = None if bias is None else (v * bias).sum(1)
                if logit_b is not None:
                    shift = logit_b.detach().float() if shift is None else shift + logit_b.detach().float()
                cached = self._expansion_cache = (key, weight, bias, v @ weight, shift)
        return cached[1], cached[2], cached[3], cached[4]

    def _logit_weight(self) -> tuple[Tensor, Tensor | None]:
        """The 1x1 logit conv (C -> 1) as (1, C) weight and (1,) bias (or None)."""
        conv = self.context_logits
        return conv.weight.reshape(1, -1), conv.bias

    def _context(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> the attention-pooled context (N, C): the logit conv as a matrix-vector product on the
        map's own layout, softmax over H x W in fp32, the weighted sum likewise."""
        logits = channel_dot(x, *self._logit_weight())  # (N, HW)
        return hw_weighted_sum(x, torch.softmax(logits.float(), dim=1))

    def forward_residual(self, x: Tensor, identity: Tensor) -> Tensor:
        if self.transform_scale is None:
            return super().forward_residual(x, identity)
        return self._map_tail(x, identity)

    def _map_tail(self, x: Tensor, identity: Tensor) -> Tensor:
        """``relu(self(x) + identity)`` with the context read from x (not written): ``x * g + identity`` in one
        ``addcmul`` (or ``x + identity``), the ``'add'`` term in one more pass, the ReLU in place."""
        shift = self._native_shift(x)
        if shift is not None:
            return self._tail(x, identity, None, shift)
        context = self._context(x)
        return self._tail(x, identity, *self._terms(context))

    def _terms(self, context: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(N, C) context -> the ``'scale'`` gate and the ``'add'`` term, each (N, C, 1, 1) or None."""
        gate = None if self.transform_scale is None else self._scale_gate(context)
        return gate, None if self.transform_add is None else self._shift(context)

    @staticmethod
    def _tail(x: Tensor, identity: Tensor, gate: Tensor | None, shift: Tensor | None) -> Tensor:
        """``relu(x * gate + shift + identity)``: one ``addcmul`` (or addition), the shift in one more pass."""
        out = torch.add(x, identity) if gate is None else torch.addcmul(identity, x, gate.to(x.dtype))
        if shift is not None:
            out.add_(shift.to(out.dtype))
        return out.relu_()

    def forward_expansion(self, z: Tensor, conv: nn.Conv2d, identity: Tensor) -> Tensor:
        """Logits and context from z (a quarter of the map's reads); for one sample the ``'add'`` term goes into
        the expansion's bias (and a ``'scale'`` gate with it into its weight), so the map is passed over only by
        the plain block's addition and ReLU. A batch keeps the gate on the map (``addcmul``) and adds the term in
        one more pass (it differs per sample). Where the expansion's weight outweighs the map
        (:func:`~attnkit.deploy.map_stats.expansion_pays`), the statistics read the map. Through the native kernel
        (:mod:`~attnkit.deploy.gc_native`) the expansion is folded into the kernel's weights (``w W``, ``W1 W``),
        so the statistics always read z, in one pass."""
        shift = self._native_shift(z, conv)  # the expansion folded into the kernel's weights: z is always cheaper
        if shift is not None:
            gate = None
        elif not expansion_pays(z, conv):
            return self._map_tail(run_expansion(z, conv), identity)
        else:
            weight, bias, logit_v, logit_c = self._expansion_fp32(conv)
            with fp32_gate_math(z):  # the small products in fp32; the two reads of z in z's dtype
                logits = channel_dot(z, logit_v, logit_c)  # = the logit conv on conv(z)
                context = expanded_weighted_sum(z, weight, bias, torch.softmax(logits.float(), dim=1))
            gate, shift = self._terms(context)
        if z.shape[0] == 1 and shift is not None:  # x * g + t = (W g) z + (b g + t): both folded
            x = run_expansion(z, conv, None if gate is None else gate.flatten(), shift.flatten())
            return x.add_(identity).relu_()
        return self._tail(run_expansion(z, conv), identity, gate, shift)

    def forward(self, x: Tensor) -> Tensor:
        shift = self._native_shift(x)
        if shift is not None:
            shift = shift.to(x.dtype)
            return x.add_(shift) if self._in_place(x) else x + shift
        context = self._context(x)
        if self.transform_scale is not None:
            out = self._gate(x, self._scale_gate(context))
            if self.transform_add is not None:
                out.add_(self._shift(context).to(out.dtype))
            return out
        shift = self._shift(context).to(x.dtype)
        return x.add_(shift) if self._in_place(x) else x + shift

    def _scale_gate(self, context: Tensor) -> Tensor:
        """(N, C) context -> the blended ``'scale'`` gate (N, C, 1, 1), in fp32."""
        with fp32_gate_math(context):
            return self._blend_gate(torch.sigmoid(self.transform_scale(context.float())))

    def _shift(self, context: Tensor) -> Tensor:
        """(N, C) context -> the ``'add'`` term ``gamma * T_a c`` (N, C, 1, 1), in fp32."""
        with fp32_gate_math(context):
            t = self.transform_add(context.float())
            return (t * self.gamma if self.blend else t)[:, :, None, None]


class FastCoord(InferenceGate):
    """``coord``: gates ``a_h`` (N, C, H, 1), ``a_w`` (N, C, 1, W) as eager, then
    ``(x * a_h) * (gamma a_w) + (1 - gamma) x`` in place. x (N, C, H, W) -> same."""

    source_type = 'coord'

    def __init__(self, module: CoordAttention) -> None:
        super().__init__(module)
        self.conv, self.bn, self.conv_h, self.conv_w = module.conv, module.bn, module.conv_h, module.conv_w

    @property
    def can_run_inplace(self) -> bool:
        return not self.blend  # the blend reads x after the gates

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        nhwc = memory_format_of(x) == torch.channels_last
        if nhwc:  # pool and gate in the (N, H, W, C) view: NCHW-style reductions over H or W are strided there
            xt = x.permute(0, 2, 3, 1)
            pooled = torch.cat([mean_over(xt, 2), mean_over(xt, 1)], 1).transpose(1, 2).unsqueeze(3)  # (N,C,H+W,1)
        else:
            pooled = torch.cat([mean_over(x, 3, keepdim=True), mean_over(x, 2, keepdim=True).transpose(2, 3)], 2)
        y = F.hardswish(self.bn(self.conv(pooled)))
        y_h, y_w = y.split([h, w], 2)
        a_h = torch.sigmoid(self.conv_h(y_h))  # (N, C, H, 1)
        a_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (N, C, 1, W)
        if self.blend:
            a_w = a_w * self.gamma.to(a_w.dtype)
        if nhwc:  # gates with C innermost and contiguous, so the broadcast multiplies vectorise
            gate_h = a_h.permute(0, 2, 3, 1).contiguous()
            out = xt.mul_(gate_h) if self._in_place(x) else xt * gate_h
            out.mul_(a_w.permute(0, 2, 3, 1).contiguous().to(out.dtype))
            if self.blend:
                out.addcmul_(xt, self.one_minus_gamma.to(out.dtype))
            return out.permute(0, 3, 1, 2)
        out = x.mul_(a_h) if self._in_place(x) else x * a_h
        out.mul_(a_w.to(out.dtype))
        return out.addcmul_(x, self.one_minus_gamma.to(out.dtype)) if self.blend else out


INFERENCE_FORMS: dict[type, Callable[[nn.Module], nn.Module]] = {
    SEModule: FastSE, ECAModule: FastECA, CBAMModule: FastCBAM, GlobalContextBlock: FastGC,
    CoordAttention: FastCoord,
}


def inference_form(module: nn.Module) -> nn.Module | None:
    """The inference form of an attention module (eval mode, same output within float rounding), or None.

    Only the exact classes of :data:`INFERENCE_FORMS` are converted: a subclass may override ``attend``.
    The module's ``attend`` must be its class's own (not patched on the instance).
    """
    make = INFERENCE_FORMS.get(type(module))
    if make is None or 'attend' in module.__dict__ or 'forward' in module.__dict__:
        return None
    return make(module)


def swap_inference_forms(model: nn.Module, *, compile: bool = False, for_compiler: bool = False,
                         compile_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Replace every attention module of ``model`` that has an inference form by it; in place.

    Modules called by their parent (``block.attn``) are replaced under the same name; modules attached by
    :func:`attnkit.attention.insert` stay attached (the target's attachment list points at the form).
    ``compile``: each form is ``torch.compile``-d (inductor, static shapes): small graphs, seconds per input
    shape, whose reductions and gating multiplies inductor fuses into a few passes over the map.
    ``for_compiler`` (implied by ``compile``): forms that have a formulation written for inductor use it
    (``cbam``: :meth:`FastCBAM._forward_flat`); for a model compiled as a whole.

    Returns:
        ``{module name: attention type}`` of the swapped modules, in model order.
    """
    from ..attention.insert import _WithAttention  # the swapped-class mixin: holds the attachment lists
    swapped: dict[str, str] = {}
    replaced: dict[int, nn.Module] = {}
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, AttentionModule) or any(name.startswith(s + '.') for s in swapped):
            continue
        form = inference_form(module)
        if form is None:
            continue
        form.for_compiler = compile or for_compiler
        if compile:
            form.compile(dynamic=False, **({'options': compile_options} if compile_options else {}))
        parent_path, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent_path), child, form)
        replaced[id(module)] = form
        swapped[name] = form.source_type
    if replaced:
        for holder in model.modules():
            if isinstance(holder, _WithAttention):
                for lst in (holder._attnkit_after, holder._attnkit_before):
                    lst[:] = [replaced.get(id(m), m) for m in lst]
    return swapped


# modules whose output is a tensor they create and hand on: an attention form attached after one of them is the
# only reader of its input (a forward hook on the module runs after the attention, on its output)
_FRESH_OUTPUT_TYPES: tuple[type, ...] = (nn.Conv2d, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def allow_inplace(model: nn.Module, fresh_targets: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Set ``inplace`` on the inference forms of ``model`` that may overwrite their input; return their names.

    A form may when it is attached (:func:`attnkit.attention.insert`) ``after`` a module whose output is a new
    tensor that nothing else reads: a convolution, a normalisation layer (``FrozenBatchNorm2d`` included), an
    attnkit ``BasicBlock``/``Bottleneck`` (the ``'after_block'`` position), or a path in ``fresh_targets``
    (the ``nn.Identity`` left by a norm folded into its convolution: it passes the convolution's new output on).
    Forms attached ``before`` a module, called by their parent, or after any other module (an ``nn.Identity``
    placeholder, a user's block, a timm stage) keep writing a new tensor, as do forms whose blend reads ``x``
    after the gates (``cbam``/``coord`` with ``gamma``: ``can_run_inplace`` is False).
    """
    from torchvision.ops import FrozenBatchNorm2d

    from ..attention.insert import attachments
    from ..backbones.blocks import BasicBlock, Bottleneck
    fresh = _FRESH_OUTPUT_TYPES + (FrozenBatchNorm2d, BasicBlock, Bottleneck)
    names = []
    for att in attachments(model):
        if att.where != 'after' or not isinstance(att.attention, InferenceGate) or not att.attention.can_run_inplace:
            continue
        target = model.get_submodule(att.target_name) if att.target_name else model
        if att.target_name in fresh_targets or isinstance(target, fresh):
            att.attention.inplace = True
            names.append(att.module_name)
    return names
