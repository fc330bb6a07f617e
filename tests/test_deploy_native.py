"""The native CPU kernel of CBAM's inference form (attnkit.deploy.cbam_native, kernels/cbam_cpu.c): its build and
cache, its outputs against the stock-op form and the eager module, its fallbacks, and the fast path using it."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from attnkit.builder import build_backbone
from attnkit.deploy import prepare_fast
from attnkit.deploy.attention_fast import FastCBAM, inference_form
from attnkit.deploy.cbam_native import CBAMKernel, cbam_kernel
from attnkit.deploy.kernels import kernel_status
from attnkit.errors import ConfigError

from _kernel_helpers import CallCounter, kernel_forms, rel_error
from _norms import randomise_norms

NHWC = torch.channels_last


def test_the_kernel_builds_here_and_says_from_what():
    """CI machines have a C compiler: the kernel must build (a fallback here would hide a broken kernel)."""
    assert cbam_kernel() is not None, kernel_status('cbam_cpu')
    assert kernel_status('cbam_cpu').startswith('built with ') and '.so' in kernel_status('cbam_cpu')


CASES = [({}, 7, 1, 9, 13), ({'layout': 'timm'}, 7, 2, 8, 8), ({'spatial_kernel': 3}, 3, 2, 5, 11),
         ({'spatial_kernel': 9}, 9, 1, 4, 3), ({}, 7, 2, 1, 1)]


def _case_id(case: tuple) -> str:
    opts, _, n, h, w = case
    return f"{'-'.join(map(str, opts.values())) or 'k7'}-n{n}-{h}x{w}"


@pytest.mark.parametrize('gamma', [True, False], ids=['gamma', 'no-gamma'])
@pytest.mark.parametrize('case', CASES, ids=_case_id)
def test_kernel_equals_the_stock_form_and_the_module(case, gamma, monkeypatch):
    """fp32, channels_last: the form and its residual tail through the kernel = the eager module (1e-5) and the
    stock-op form; odd sizes (H != W, maps smaller than the spatial kernel, 1 x 1), both layouts, 1 and 2 images,
    96 channels (a 64-channel tile and a 32-channel rest). The tail writes neither input; the form in place
    writes x's buffer."""
    opts, k, n, h, w = case
    spy = CallCounter(monkeypatch, CBAMKernel, 'run')
    module, stock, native = kernel_forms('cbam', 96, h * w + n, cbam_kernel(), gamma=gamma, **opts)
    assert native.spatial.kernel_size == (k, k)
    x = (torch.randn(n, 96, h, w) * 3).contiguous(memory_format=NHWC)
    identity = torch.randn(n, 96, h, w).contiguous(memory_format=NHWC)
    before = (x.clone(), identity.clone())
    with torch.no_grad():
        expected = module(x)
        got = native(x)
        assert rel_error(got, expected) <= 1e-5 and rel_error(got, stock(x)) <= 1e-5
        assert got.is_contiguous(memory_format=NHWC) and got.data_ptr() != x.data_ptr()
        tail = native.forward_residual(x, identity)
        assert rel_error(tail, torch.relu(expected + identity)) <= 1e-5
        assert rel_error(tail, stock.forward_residual(x, identity)) <= 1e-5
        assert torch.equal(x, before[0]) and torch.equal(identity, before[1])
        native.inplace = True
        y = x.clone()
        out = native(y)
        assert out.data_ptr() == y.data_ptr() and rel_error(out, expected) <= 1e-5
    assert spy.calls == 3


def test_bf16_kernel_rounds_once(monkeypatch):
    """bf16 maps: the kernel keeps statistics and gates in fp32 and rounds once, at the output, so it is at least
    as close to the fp32 module as the stock form in bf16 (which rounds y = x * Mc, then y * Ms, ...), and within
    bf16's resolution of it."""
    spy = CallCounter(monkeypatch, CBAMKernel, 'run')
    module, stock, native = kernel_forms('cbam', 128, 3, cbam_kernel())
    x = (torch.randn(2, 128, 12, 10) * 3).contiguous(memory_format=NHWC)
    identity = torch.randn(2, 128, 12, 10).contiguous(memory_format=NHWC)
    xb, ib = x.bfloat16(), identity.bfloat16()
    with torch.no_grad():
        expected = torch.relu(module(xb.float()) + ib.float())
        with torch.autocast('cpu', dtype=torch.bfloat16):  # as on the fast path (the stock spatial conv needs it)
            got = native.forward_residual(xb, ib)
            stock_err = rel_error(stock.forward_residual(xb, ib), expected)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=NHWC) and spy.calls == 1
    assert rel_error(got, expected) <= min(stock_err * 1.05, 2 ** -8), (rel_error(got, expected), stock_err)


def test_kernel_rounds_bf16_to_nearest_even_and_keeps_nan():
    """The kernel's fp32 -> bf16 output conversion against torch's cast: ties to even, just above a tie,
    negatives, a denormal, overflow to infinity, infinities and NaN. The values ride in the channel gate
    (x = 1 in bf16, Ms = 1, no identity, no ReLU), so the kernel writes bf16(gate) itself."""
    values = torch.tensor([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -(1.0 + 2 ** -8), 2.0 + 2 ** -7 + 2 ** -20, 0.1, -3.0,
                           1e-40, 3.3e38, 3.4e38, float('inf'), float('-inf'), float('nan')])
    c = values.numel()
    ones = torch.ones(1, c, 1, 1, dtype=torch.bfloat16)
    out = torch.empty(1, c, 1, 1, dtype=torch.bfloat16)
    spatial = torch.ones(1)  # held: a temporary's buffer would be freed before the call
    cbam_kernel().lib.tail(ones.data_ptr(), None, 1, values.data_ptr(), spatial.data_ptr(), 0.0, 1, 1, c, 0,
                           out.data_ptr(), 1)
    expected = values.bfloat16()
    assert torch.equal(out.flatten().isnan(), expected.isnan())
    assert torch.equal(out.flatten()[:-1], expected[:-1])
    assert torch.equal(out.flatten()[:-1].float().signbit(), expected[:-1].float().signbit())


def test_inputs_the_kernel_does_not_take_run_the_stock_path(monkeypatch):
    """NCHW maps, a non-channels_last identity, autograd: the stock path, the same values; a spatial conv the
    kernel cannot run is refused."""
    spy = CallCounter(monkeypatch, CBAMKernel, 'run')
    module, stock, native = kernel_forms('cbam', 32, 5, cbam_kernel())
    x = torch.randn(2, 32, 6, 7)
    nhwc = x.contiguous(memory_format=NHWC)
    with torch.no_grad():
        expected = module(x)
        assert rel_error(native(x), expected) <= 1e-5  # NCHW
        assert rel_error(native.forward_residual(nhwc, x), torch.relu(expected + x)) <= 1e-5  # identity NCHW
    assert spy.calls == 0
    leaf = nhwc.clone().requires_grad_()
    assert rel_error(native(leaf).detach(), expected) <= 1e-5 and spy.calls == 0  # autograd on: the stock ops
    # a spatial conv the kernel cannot run is refused when the kernel is given
    odd = inference_form(module)
    odd.spatial = torch.nn.Conv2d(2, 1, 7, padding=3, stride=2)
    assert not odd.use_native(cbam_kernel()) and odd.native is None


def test_fast_path_runs_cbam_through_the_kernel_and_equals_eager():
    """prepare_fast on a ResNet-50 with CBAM (trained gammas): every form through the kernel (the report and the
    summary say so), outputs = eager (fp32, 1e-4); native=False keeps the stock ops; a deep copy of the prepared
    model still runs through the kernel."""
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=50, base_channels=16, attention=dict(type='cbam'),
                                identity_init=True)).eval()
    randomise_norms(model, 1, gammas=True)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        expected = model(x)
    fast, report = prepare_fast(copy.deepcopy(model), bf16=False)
    assert len(report.native_forms) == len(report.attention_forms) == 13
    assert report.native_forms == report.fused_tails and report.native_status.startswith('built with')
    assert '13 through the native CPU kernel' in report.summary()
    for got, ref in zip(fast(x), expected):
        assert rel_error(got, ref) <= 1e-4
    again = copy.deepcopy(fast)
    assert all(m.native is cbam_kernel() for m in again.modules() if isinstance(m, FastCBAM))
    for got, ref in zip(again(x[:1]), expected):
        assert rel_error(got, ref[:1]) <= 1e-4
    plain, off = prepare_fast(copy.deepcopy(model), bf16=False, native=False)
    assert off.native_forms == [] and off.native_status == 'off (native=False)'
    assert 'native CPU kernel not used: off (native=False)' in off.summary()
    assert all(m.native is None for m in plain.modules() if isinstance(m, FastCBAM))
    for got, ref in zip(plain(x), expected):
        assert rel_error(got, ref) <= 1e-4
    no_kernel, report = prepare_fast(build_backbone(dict(type='ResNet', depth=18, base_channels=8,
                                                         attention=dict(type='eca'))).eval())
    assert report.native_forms == [] and report.native_status == '' and 'native' not in report.summary()
    for mode in ('fast', 'eager'):  # checked whatever else is asked (eager attention has no form to give it to)
        with pytest.raises(ConfigError, match="native must be 'auto', True or False, got 'yes'"):
            prepare_fast(copy.deepcopy(model), native='yes', attention=mode)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, 'NO_ALBUMENTATIONS_UPDATE': '1', 'HF_HUB_OFFLINE': '1', **env}
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=full,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)


_PREPARE = """
    import sys, torch
    from attnkit.builder import build_backbone
    from attnkit.deploy import prepare_fast
    torch.manual_seed(0)
    model = build_backbone(dict(type='ResNet', depth=18, base_channels=8, attention=dict(type='cbam'))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)[-1]
    native = sys.argv[1] if len(sys.argv) > 1 else 'auto'
    fast, report = prepare_fast(model, bf16=False, native={'auto': 'auto', 'on': True}[native])
    print('FORMS', len(report.native_forms))
    print('STATUS', report.native_status)
    print('DIFF', float((fast(x)[-1] - ref).abs().max()))
"""


def _parsed(out: subprocess.CompletedProcess) -> dict[str, str]:
    assert out.returncode == 0, out.stderr[-2000:]
    return {line.split(' ', 1)[0]: line.split(' ', 1)[1] for line in out.stdout.splitlines() if ' ' in line}


def test_build_cache_reuse_damage_and_switches(tmp_path):
    """In fresh processes: the first builds into $ATTNKIT_CACHE_DIR, the second reuses the file (not rebuilt), a
    damaged cache file is rebuilt; ATTNKIT_NATIVE=0 and a missing compiler fall back to the stock ops with the
    reason in the report (same outputs); native=True without a compiler is an error naming why."""
    env = {'ATTNKIT_CACHE_DIR': str(tmp_path)}
    first = _parsed(_run(_PREPARE, env))
    (built,) = list((tmp_path / 'kernels').glob('cbam_cpu-*.so'))
    assert first['FORMS'] == '6' and str(built) in first['STATUS'] and float(first['DIFF']) <= 1e-5
    stamp = built.stat().st_mtime_ns
    second = _parsed(_run(_PREPARE, env))
    assert second['FORMS'] == '6' and built.stat().st_mtime_ns == stamp
    built.write_bytes(b'not a shared library')
    third = _parsed(_run(_PREPARE, env))
    assert third['FORMS'] == '6' and built.stat().st_size > 1000
    assert list((tmp_path / 'kernels').iterdir()) == [built]  # no temporary files left
    off = _parsed(_run(_PREPARE, {**env, 'ATTNKIT_NATIVE': '0'}))
    assert off['FORMS'] == '0' and off['STATUS'] == 'off (ATTNKIT_NATIVE=0)' and float(off['DIFF']) <= 1e-5
    empty = tmp_path / 'empty'
    missing = _parsed(_run(_PREPARE, {'ATTNKIT_CACHE_DIR': str(empty), 'CC': 'no-such-cc'}))
    assert missing['FORMS'] == '0' and missing['STATUS'] == "no C compiler ('no-such-cc' not found; set $CC)"
    assert float(missing['DIFF']) <= 1e-5 and not empty.exists()
    required = _run(_PREPARE.replace("sys.argv[1] if len(sys.argv) > 1 else 'auto'", "'on'"),
                    {'ATTNKIT_CACHE_DIR': str(empty), 'CC': 'no-such-cc'})
    assert required.returncode != 0
    assert "native=True, but the cbam_cpu kernel is not available: no C compiler ('no-such-cc' not found" in \
        required.stderr


def test_two_processes_build_one_cache_at_once(tmp_path):
    """Two processes building the same kernel into an empty cache at the same time both load it (each compiles
    into its own temporary file and moves it into place)."""
    env = {**os.environ, 'ATTNKIT_CACHE_DIR': str(tmp_path)}
    code = 'from attnkit.deploy.cbam_native import cbam_kernel; assert cbam_kernel() is not None; print("ok")'
    procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1000:] for o in outs]
    assert len(list((tmp_path / 'kernels').iterdir())) == 1
