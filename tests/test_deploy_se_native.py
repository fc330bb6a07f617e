"""The native CPU kernel of SE's gate (attnkit.deploy.se_native, kernels/se_cpu.c): against the eager module and the
stock-op form in both layouts, fp32 and bf16, the fallbacks, and a ResNet-50-SE on the fast path."""
from __future__ import annotations

import copy

import pytest
import torch

from attnkit.builder import build_backbone
from attnkit.deploy import prepare_fast
from attnkit.deploy.kernels import kernel_status
from attnkit.deploy.se_native import SEKernel, se_kernel

from _kernel_helpers import CallCounter, check_form_and_tail, kernel_forms, rel_error
from _norms import randomise_norms

NHWC = torch.channels_last


def test_the_kernel_builds_here_and_says_from_what():
    assert se_kernel() is not None, kernel_status('se_cpu')
    assert kernel_status('se_cpu').startswith('built with ') and 'se_cpu-' in kernel_status('se_cpu')


@pytest.mark.parametrize('gamma', [True, False], ids=['gamma', 'no-gamma'])
@pytest.mark.parametrize('layout, n, c, h, w', [('attnkit', 1, 40, 9, 13), ('timm', 2, 96, 6, 5),
                                               ('attnkit', 2, 24, 1, 1), ('timm', 1, 64, 21, 19)])
def test_kernel_equals_the_stock_form_and_the_module(layout, n, c, h, w, gamma, monkeypatch):
    """fp32, channels_last: the form and its residual tail through the kernel = the eager module (1e-5) and the
    stock-op form; both layouts (nn.Linear, timm's 1x1 convs), 1 x 1 maps, > 64 positions (two threads share an
    image). Neither input is written by the tail; new weights are read again (the fp32 copy is keyed by version)."""
    spy = CallCounter(monkeypatch, SEKernel, 'gate')
    module, stock, native = kernel_forms('se', c, n * c + h, se_kernel(), gamma=gamma, layout=layout)
    x = (torch.randn(n, c, h, w) * 3).contiguous(memory_format=NHWC)
    identity = torch.randn(n, c, h, w).contiguous(memory_format=NHWC)
    check_form_and_tail(module, stock, native, x, identity)
    with torch.no_grad():
        module.fc2.weight.mul_(-1.5)
        assert rel_error(native(x), module(x)) <= 1e-5
    assert spy.calls == 3


def test_bf16_gate_is_as_close_as_the_stock_form():
    """bf16 maps under autocast, as on the fast path: the kernel's mean and MLP in fp32 are at least as close to
    the fp32 module as the stock form's."""
    module, stock, native = kernel_forms('se', 128, 3, se_kernel())
    x = (torch.randn(1, 128, 24, 20) + 0.5).contiguous(memory_format=NHWC).bfloat16()
    identity = torch.randn(1, 128, 24, 20).contiguous(memory_format=NHWC).bfloat16()
    with torch.no_grad():
        expected = torch.relu(module(x.float()) + identity.float())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = native.forward_residual(x, identity)
            stock_err = rel_error(stock.forward_residual(x, identity), expected)
    assert got.dtype == torch.bfloat16
    assert rel_error(got, expected) <= max(stock_err * 1.05, 2 ** -8), (rel_error(got, expected), stock_err)


def test_fallbacks(monkeypatch):
    """NCHW maps and autograd take the stock path, with the same outputs."""
    spy = CallCounter(monkeypatch, SEKernel, 'gate')
    module, _, native = kernel_forms('se', 32, 5, se_kernel())
    x = torch.randn(1, 32, 7, 6)
    with torch.no_grad():
        assert rel_error(native(x), module(x)) <= 1e-5
    grad = x.contiguous(memory_format=NHWC).requires_grad_()
    assert rel_error(native(grad).detach(), module(grad).detach()) <= 1e-5
    assert spy.calls == 0


def test_fast_path_runs_se_through_the_kernel_and_equals_eager():
    """prepare_fast on a ResNet-50 with SE (trained gammas): every form through the kernel and fused with its
    addition; outputs = eager (fp32, 1e-4); native=False gives the same on stock ops."""
    model = build_backbone(dict(type='ResNet', depth=50, base_channels=16, attention=dict(type='se'),
                                identity_init=True)).eval()
    randomise_norms(model, 2, gammas=True)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        expected = model(x)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert report.native_forms == report.fused_tails and len(report.native_forms) == 13
    assert 'se_cpu' in report.native_status and '13 through the native CPU kernel' in report.summary()
    stock, off = prepare_fast(copy.deepcopy(model), bf16=False, native=False)
    assert off.native_forms == []
    with torch.no_grad():
        for got, plain, ref in zip(fast(x), stock(x), expected):
            assert rel_error(got, ref) <= 1e-4 and rel_error(plain, ref) <= 1e-4
