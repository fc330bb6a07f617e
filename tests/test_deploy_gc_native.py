"""The native CPU kernel of the GC block's 'add' term (attnkit.deploy.gc_native, kernels/gc_cpu.c): against the eager
module and the stock-op form, from the map and through a bottleneck's 1x1 expansion, fp32 and bf16, softmax
extremes across tiles and threads, the fallbacks, and a ResNet-50-GC on the fast path."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attnkit.builder import build_attention, build_backbone
from attnkit.deploy import prepare_fast
from attnkit.deploy.attention_fast import FastGC, inference_form
from attnkit.deploy.gc_native import GCKernel, GCTerms, gc_kernel
from attnkit.deploy.kernels import kernel_status

from _kernel_helpers import CallCounter, check_form_and_tail, rel_error
from _norms import randomise_norms

NHWC = torch.channels_last


def _gc(channels: int, seed: int, gamma: bool = True, **opts) -> nn.Module:
    """An eager GC block with random LayerNorm affine, logit bias and gamma (fresh ones are trivial)."""
    torch.manual_seed(seed)
    module = build_attention(dict(type='gc', **opts), channels, identity_init=gamma).eval()
    randomise_norms(module, seed, gammas=True)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return module


def _forms(module: nn.Module) -> tuple[FastGC, FastGC]:
    """(its form on stock ops, its form through the kernel)."""
    stock, native = inference_form(module), inference_form(module)
    assert native.use_native(gc_kernel())
    return stock, native


def test_the_kernel_builds_here_and_says_from_what():
    assert gc_kernel() is not None, kernel_status('gc_cpu')
    assert kernel_status('gc_cpu').startswith('built with ') and 'gc_cpu-' in kernel_status('gc_cpu')


@pytest.mark.parametrize('gamma', [True, False], ids=['gamma', 'no-gamma'])
@pytest.mark.parametrize('n, c, h, w', [(1, 40, 9, 13), (2, 96, 6, 5), (1, 24, 1, 1), (2, 64, 33, 31)])
def test_kernel_from_the_map_equals_the_module(n, c, h, w, gamma, monkeypatch):
    """fp32, channels_last: the form and its residual tail through the kernel = the eager module (1e-5) and the
    stock-op form; odd sizes (1 x 1, positions not a multiple of the 16-position tile, > 256 positions so two
    threads share an image), 1 and 2 images. Neither input is written."""
    spy = CallCounter(monkeypatch, GCKernel, 'shift')
    module = _gc(c, seed=n * c + h, gamma=gamma)
    stock, native = _forms(module)
    x = (torch.randn(n, c, h, w) * 3).contiguous(memory_format=NHWC)
    identity = torch.randn(n, c, h, w).contiguous(memory_format=NHWC)
    check_form_and_tail(module, stock, native, x, identity)
    assert spy.calls == 2


@pytest.mark.parametrize('bias', [True, False], ids=['conv-bias', 'no-conv-bias'])
@pytest.mark.parametrize('n', [1, 2])
def test_kernel_through_the_expansion_equals_the_module(n, bias, monkeypatch):
    """A bottleneck's tail ``relu(gc(conv3(z)) + identity)`` read from conv3's input z (the expansion folded into
    the kernel's logit vector and first layer) = the eager module on conv3's output (1e-5): one image takes the
    term into conv3's bias, two keep it on the map."""
    spy = CallCounter(monkeypatch, GCKernel, 'shift')
    module = _gc(128, seed=7 + n)
    stock, native = _forms(module)
    conv = nn.Conv2d(32, 128, 1, bias=bias).eval()
    z = torch.randn(n, 32, 20, 18).contiguous(memory_format=NHWC)
    identity = torch.randn(n, 128, 20, 18).contiguous(memory_format=NHWC)
    with torch.no_grad():
        expected = torch.relu(module(conv(z)) + identity)
        got = native.forward_expansion(z, conv, identity)
        assert rel_error(got, expected) <= 1e-5 and rel_error(got, stock.forward_expansion(z, conv, identity)) <= 1e-5
        conv.weight.mul_(0.5)  # new weights: the folded terms are recomputed
        assert rel_error(native.forward_expansion(z, conv, identity), torch.relu(module(conv(z)) + identity)) <= 1e-5
    assert spy.calls == 2


def test_online_softmax_across_tiles_and_threads():
    """Logits spanning ~80 (the running maximum rises tile after tile and differs between the two threads' halves)
    and one position that dominates: the context = torch's softmax-weighted sum (fp32, 1e-5)."""
    module = _gc(16, seed=1, gamma=False)
    _, native = _forms(module)
    h, w = 40, 30
    x = torch.randn(1, 16, h, w)
    ramp = torch.linspace(-40, 40, h * w).reshape(1, h, w)
    with torch.no_grad():
        module.context_logits.weight.zero_()
        module.context_logits.weight[0, 0] = 1.0
        module.context_logits.bias.zero_()
        x[:, 0] = ramp
        x[0, 0, 3, 7] = 60.0  # in the first thread's half, after its running maximum settled lower
        x = x.contiguous(memory_format=NHWC)
        expected = module(x)
        assert rel_error(native(x), expected) <= 1e-5


def test_bf16_kernel_is_as_close_as_the_stock_form():
    """bf16 maps, as on the fast path (under autocast): the kernel reads bf16 and computes in fp32, so its term is
    at least as close to the fp32 module as the stock form's (which reads the map with bf16 products)."""
    module = _gc(128, seed=3)
    stock, native = _forms(module)
    conv = nn.Conv2d(32, 128, 1).eval()
    z = torch.randn(1, 32, 24, 20).contiguous(memory_format=NHWC).bfloat16()
    identity = torch.randn(1, 128, 24, 20).contiguous(memory_format=NHWC).bfloat16()
    with torch.no_grad():
        expected = torch.relu(module(conv(z.float())) + identity.float())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = native.forward_expansion(z, conv, identity)
            stock_err = rel_error(stock.forward_expansion(z, conv, identity), expected)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=NHWC)
    assert rel_error(got, expected) <= max(stock_err * 1.05, 2 ** -8), (rel_error(got, expected), stock_err)


def test_fallbacks_and_what_the_kernel_refuses(monkeypatch):
    """NCHW maps and autograd take the stock path (same outputs); a 'scale' fusion has no kernel (use_native is
    False); terms that are not fp32 are refused when built, not read as raw memory."""
    spy = CallCounter(monkeypatch, GCKernel, 'shift')
    module = _gc(32, seed=5)
    _, native = _forms(module)
    x = torch.randn(1, 32, 7, 6)
    with torch.no_grad():
        assert rel_error(native(x), module(x)) <= 1e-5  # NCHW
    grad = x.contiguous(memory_format=NHWC).requires_grad_()
    assert rel_error(native(grad).detach(), module(grad).detach()) <= 1e-5
    assert spy.calls == 0
    scale = inference_form(_gc(32, seed=6, fusion=('scale', 'add')))
    assert not scale.use_native(gc_kernel()) and scale.native is None
    with pytest.raises(ValueError, match=r'GCTerms.first: the kernel needs a contiguous float32 CPU tensor, got '
                                         r'torch.bfloat16'):
        GCTerms(torch.zeros(4), 0.0, torch.zeros(2, 4, dtype=torch.bfloat16), None, torch.ones(2),
                torch.zeros(2), 1e-5, torch.zeros(4, 2), None, 1.0)


@pytest.mark.parametrize('bf16', [False, True], ids=['fp32', 'bf16'])
def test_fast_path_runs_gc_through_the_kernel_and_equals_eager(bf16):
    """prepare_fast on a ResNet-50 with GC (trained gammas, random LayerNorms): every form through the kernel,
    reading conv3's input; outputs = eager (fp32 1e-4; bf16 within the stock bf16 path's own error, ~1e-2); the
    terms folded under bf16 autocast stay fp32; native=False gives the same outputs on stock ops."""
    model = build_backbone(dict(type='ResNet', depth=50, base_channels=16, attention=dict(type='gc'),
                                identity_init=True)).eval()
    randomise_norms(model, 2, gammas=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        expected = model(x)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=bf16)
    assert len(report.native_forms) == len(report.expansion_tails) == 13
    assert 'gc_cpu' in report.native_status and '13 through the native CPU kernel' in report.summary()
    stock, off = prepare_fast(copy.deepcopy(model), bf16=bf16, native=False)
    assert off.native_forms == []
    with torch.no_grad():
        got, plain = fast(x[:1]), stock(x[:1])
    bound = 3e-2 if bf16 else 1e-4
    for a, b, ref in zip(got, plain, expected):
        assert rel_error(a, ref[:1]) <= bound and rel_error(b, ref[:1]) <= bound
    for form in (m for m in fast.modules() if isinstance(m, FastGC)):
        assert all(terms.first.dtype == torch.float32 for _, terms in form._native_cache.values())
