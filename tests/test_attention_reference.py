"""The self-attention modules against naive HW x HW references written from the papers' formulas."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention import create_attention

C = 16


def conv1x1(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """(N, C, H, W) -> (N, HW, C_out) with the conv's weight and bias."""
    y = torch.einsum('nchw,oc->nhwo', x, conv.weight[:, :, 0, 0])
    if conv.bias is not None:
        y = y + conv.bias
    return y.flatten(1, 2)


def back(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, HW, C) -> (N, C, H, W)."""
    return y.transpose(1, 2).reshape(y.shape[0], -1, h, w)


def ref_nonlocal(m, x):
    n, _, h, w = x.shape
    theta, phi, g = conv1x1(x, m.qkv).split(m.inner, -1)
    attn = torch.softmax(theta @ phi.transpose(1, 2) * m.scale, -1)  # (N, HW, HW)
    return x + F.conv2d(back(attn @ g, h, w), m.out.weight, m.out.bias)


def ref_mhsa(m, x):
    n, c, h, w = x.shape
    heads, d, big = m.heads, m.head_dim, m.max_size
    q, k, v = (t.reshape(n, h * w, heads, d).transpose(1, 2) for t in conv1x1(x, m.qkv).split(c, -1))
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    rh = m.pos_rel_h[ys[None, :] - ys[:, None] + big - 1]  # (HW, HW, d): r_h[y_j - y_i]
    rw = m.pos_rel_w[xs[None, :] - xs[:, None] + big - 1]
    logits = q @ k.transpose(-1, -2) + torch.einsum('nhid,ijd->nhij', q, rh) + torch.einsum('nhid,ijd->nhij', q, rw)
    out = torch.softmax(logits * m.scale, -1) @ v  # (N, heads, HW, d)
    out = back(out.transpose(1, 2).reshape(n, h * w, c), h, w)
    return F.avg_pool2d(out, 2, 2, ceil_mode=True) if m.stride == 2 else out


def ref_pam(m, x):
    n, c, h, w = x.shape
    q, k, v = conv1x1(x, m.qkv).split([m.key_channels, m.key_channels, c], -1)
    attn = torch.softmax(q @ k.transpose(1, 2), -1)  # energy = Q^T K, no scaling
    return m.gamma * back(attn @ v, h, w) + x


def ref_cam(m, x):
    n, c, h, w = x.shape
    xs = x.reshape(n, c, h * w)
    energy = xs @ xs.transpose(1, 2)
    attn = torch.softmax(energy.amax(-1, keepdim=True).expand_as(energy) - energy, -1)
    return m.gamma * (attn @ xs).reshape(n, c, h, w) + x


def ref_criss_cross(m, x):
    n, c, h, w = x.shape
    q, k, v = conv1x1(x, m.qkv).split([m.key_channels, m.key_channels, c], -1)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    cross = (ys[:, None] == ys[None, :]) | (xs[:, None] == xs[None, :])  # row or column, centre once
    logits = (q @ k.transpose(1, 2)).masked_fill(~cross, float('-inf'))
    return m.gamma * back(torch.softmax(logits, -1) @ v, h, w) + x


REFERENCES = {'nonlocal': ref_nonlocal, 'mhsa': ref_mhsa, 'danet_pam': ref_pam, 'danet_cam': ref_cam,
              'criss_cross': ref_criss_cross}


def build(name, dtype, **kwargs):
    torch.manual_seed(0)
    m = create_attention(name, C, **kwargs).to(dtype)
    if m.gamma is not None:
        with torch.no_grad():
            m.gamma.fill_(0.7)
    return m


CASES = [((9, 13), torch.float64, 1e-10), ((9, 13), torch.float32, 1e-5), ((1, 6), torch.float64, 1e-10),
         ((5, 1), torch.float64, 1e-10), ((1, 1), torch.float64, 1e-10)]


@pytest.mark.parametrize('size,dtype,tol', CASES)
@pytest.mark.parametrize('name', sorted(REFERENCES))
def test_matches_naive_reference(name, size, dtype, tol):
    m = build(name, dtype)
    x = torch.randn(2, C, *size, dtype=dtype)
    if name == 'danet_cam':
        x = x * 0.3  # keep the unscaled channel energies in a range where float32 softmax is well-conditioned
    with torch.no_grad():
        torch.testing.assert_close(m(x), REFERENCES[name](m, x), atol=tol, rtol=tol)
        xc = x.to(memory_format=torch.channels_last)
        torch.testing.assert_close(m(xc), REFERENCES[name](m, x), atol=tol, rtol=tol)


@pytest.mark.parametrize('size', [(5, 7), (16, 16), (16, 3)])
def test_mhsa_any_size_up_to_max_size(size):
    m = build('mhsa', torch.float64, max_size=16, heads=2)
    x = torch.randn(1, C, *size, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_mhsa(m, x), atol=1e-10, rtol=1e-10)


def test_mhsa_stride_two_matches_reference():
    m = build('mhsa', torch.float64, stride=2, max_size=16)
    x = torch.randn(2, C, 7, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_mhsa(m, x), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize('name', sorted(REFERENCES))
def test_gradients_match_reference(name):
    m = build(name, torch.float64)
    x = torch.randn(1, C, 6, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(1, C, 6, 5, dtype=torch.float64)
    grads = torch.autograd.grad((m(x) * weights).sum(), [x, *m.parameters()])
    ref = torch.autograd.grad((REFERENCES[name](m, x) * weights).sum(), [x, *m.parameters()])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('name', ['nonlocal', 'mhsa', 'danet_pam', 'danet_cam'])
def test_sdpa_modules_run_on_the_flash_kernel(name, channels_last):
    """With only the flash backend allowed, SDPA raises instead of falling back to the HW x HW math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    m = build(name, torch.float32)
    x = torch.randn(2, C, 9, 13)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        m(x).sum().backward()
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast('cpu', dtype=torch.bfloat16):
        m(x).sum().backward()
    assert x.grad is not None
