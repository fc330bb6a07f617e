"""Where ``attnkit.attention._ops.sdpa`` pads q/k/v widths: only for the CPU flash kernel, never to equal widths
on CUDA (where it would multiply DANet PAM's QK^T work by 8)."""
from __future__ import annotations

import pytest
import torch

from attnkit.attention._ops import sdpa, sdpa_padding


def _naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale q k^T) v with the L x L matrix, in float64."""
    return torch.softmax(scale * q.double() @ k.double().transpose(-1, -2), -1) @ v.double()


def test_cpu_pads_only_unequal_widths() -> None:
    cpu = torch.device('cpu')
    assert sdpa_padding(cpu, 8, 64) == (56, 0)  # DANet PAM: q/k C/8 padded to v's C
    assert sdpa_padding(cpu, 75, 64) == (0, 11)  # MHSA: v padded to q/k's d + H + W
    assert sdpa_padding(cpu, 64, 64) == (0, 0)
    assert sdpa_padding(cpu, 13, 13) == (0, 0)


def test_cuda_calls_sdpa_without_equal_width_padding() -> None:
    """Decided from the device object alone: no GPU needed."""
    cuda = torch.device('cuda')
    assert sdpa_padding(cuda, 64, 512) == (0, 0)  # DANet PAM at C=512: SDPA as it is (no 8x QK^T work)
    assert sdpa_padding(torch.device('cuda', 1), 32, 256) == (0, 0)
    assert sdpa_padding(cuda, 64, 64) == (0, 0)
    # a width the fused kernels cannot take (not a multiple of 8) is only rounded up, never widened to v's
    assert sdpa_padding(cuda, 64 + 13 + 9, 64) == (2, 0)
    assert sdpa_padding(cuda, 4096, 4095) == (0, 1)


@pytest.mark.parametrize('dk, dv', [(4, 32), (32, 4), (16, 16), (43, 32)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cpu_output_matches_naive_softmax(dk: int, dv: int, dtype: torch.dtype) -> None:
    """Unchanged on the CPU: the padded flash path equals softmax(scale q k^T) v, shape and dtype of v kept."""
    g = torch.Generator().manual_seed(dk * 100 + dv)
    q, k = (torch.randn(2, 3, 57, dk, generator=g) for _ in range(2))
    v = torch.randn(2, 3, 57, dv, generator=g)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    out = sdpa(q, k, v, 0.3)
    assert out.shape == (2, 3, 57, dv) and out.dtype == dtype
    ref = _naive(q, k, v, 0.3)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_cpu_unequal_widths_still_run_on_the_flash_kernel() -> None:
    """With only the flash backend allowed, unequal widths would raise without the CPU padding."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q, k, v = torch.randn(1, 1, 40, 8), torch.randn(1, 1, 40, 8), torch.randn(1, 1, 40, 64)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = sdpa(q, k, v, 1.0)
        with pytest.raises(RuntimeError):
            torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(out.double(), _naive(q, k, v, 1.0), atol=1e-5, rtol=1e-5)
