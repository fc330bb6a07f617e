"""Behaviour shared by every registered attention module: shapes, gradients, identity init, dtypes,
memory formats, input checks and the factory."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit import build_attention
from attnkit.attention import AttentionModule, create_attention, eca_kernel_size
from attnkit.errors import ConfigError
from attnkit.registry import ATTENTION

NAMES = sorted(ATTENTION.module_dict)
C = 16


def make(name: str, **kwargs) -> AttentionModule:
    torch.manual_seed(0)
    return create_attention(name, C, **kwargs)


def test_all_modules_registered():
    assert set(NAMES) >= {'se', 'eca', 'cbam', 'coord', 'simam', 'gc', 'nonlocal', 'mhsa', 'danet_pam',
                          'danet_cam', 'criss_cross'}
    assert create_attention is build_attention


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('size', [(17, 23), (1, 1)])
def test_shape(name, size):
    m = make(name)
    x = torch.randn(2, C, *size)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize('name', NAMES)
def test_gradients_reach_input_and_every_parameter(name):
    m = make(name)
    x = torch.randn(2, C, 17, 23, requires_grad=True)
    (m(x) * torch.randn(2, C, 17, 23)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f'{name}.{pname} got no gradient'


@pytest.mark.parametrize('name', NAMES)
def test_identity_init_is_exact_and_gamma_learns(name):
    m = make(name, identity_init=True)
    x = torch.randn(2, C, 17, 23)
    y = m(x)
    assert torch.equal(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert m.gamma.grad is not None and m.gamma.grad.abs() > 0


@pytest.mark.parametrize('name', NAMES)
def test_bfloat16(name):
    m = make(name)
    x = torch.randn(2, C, 9, 11)
    ref = m(x)
    y = m.to(torch.bfloat16)(x.bfloat16())
    assert y.dtype == torch.bfloat16 and y.shape == x.shape and torch.isfinite(y).all()
    if name != 'danet_cam':  # CAM's unscaled C x C energies make its softmax too sharp for bf16 rounding
        assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1
    with torch.autocast('cpu', dtype=torch.bfloat16):
        z = m.float()(x.bfloat16())
    assert z.dtype == torch.bfloat16 and torch.isfinite(z).all()


@pytest.mark.parametrize('name', NAMES)
def test_channels_last_in_channels_last_out(name):
    m = make(name)
    x = torch.randn(2, C, 9, 11)
    xc = x.to(memory_format=torch.channels_last)
    y, yc = m(x), m(xc)
    assert yc.is_contiguous(memory_format=torch.channels_last) and not yc.is_contiguous()
    assert y.is_contiguous()
    torch.testing.assert_close(yc, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', NAMES)
def test_wrong_input_is_named(name):
    m = make(name)
    cls = type(m).__name__
    with pytest.raises(ValueError, match=rf'{cls} expects input \(N, {C}, H, W\), got \(2, 8, 5, 5\)'):
        m(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=rf'{cls} expects input \(N, {C}, H, W\), got \({C}, 5, 5\)'):
        m(torch.randn(C, 5, 5))


def test_factory_and_config_errors():
    m = build_attention(dict(type='se', reduction=4), 32)
    assert m.fc1.out_features == 8 and m.channels == 32
    with pytest.raises(ConfigError, match='eca'):
        create_attention('ecaa', 16)
    with pytest.raises(ConfigError, match='reduction'):
        create_attention('se', 16, reducton=4)
    with pytest.raises(ValueError, match='divisible'):
        create_attention('mhsa', 10, heads=4)
    with pytest.raises(ValueError, match='fusion'):
        create_attention('gc', 16, fusion='mul')


def test_eca_kernel_size_follows_channel_count():
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 2048)] == [3, 5, 5, 5, 7]
    assert create_attention('eca', 256).conv.kernel_size == (5,)


@pytest.mark.parametrize('fusion', ['scale', ('scale', 'add')])
def test_gc_fusions(fusion):
    m = make('gc', fusion=fusion)
    x = torch.randn(2, C, 6, 5)
    assert m(x).shape == x.shape
    assert torch.equal(make('gc', fusion=fusion, identity_init=True)(x), x)


def test_mhsa_stride_two_pools_like_a_strided_conv():
    m = make('mhsa', stride=2, identity_init=True)
    x = torch.randn(2, C, 17, 23)
    y = m(x)
    assert y.shape == (2, C, 9, 12)
    assert torch.equal(y, F.avg_pool2d(x, 2, 2, ceil_mode=True))
    assert make('mhsa', stride=2)(x.to(memory_format=torch.channels_last)).is_contiguous(
        memory_format=torch.channels_last)


def test_mhsa_rejects_inputs_beyond_max_size():
    m = make('mhsa', max_size=8)
    assert m(torch.randn(1, C, 8, 3)).shape == (1, C, 8, 3)
    with pytest.raises(ValueError, match='max_size=8.*9x3'):
        m(torch.randn(1, C, 9, 3))
