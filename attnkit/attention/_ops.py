"""Token layout helpers and the O(N)-memory scaled-dot-product attention shared by the modules."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['to_tokens', 'from_tokens', 'sdpa', 'sdpa_padding', 'attention_probs']

# CUDA's fused kernels want head widths that are multiples of 8 (16-bit inputs; 4 for float32)
_CUDA_ALIGN = 8


def to_tokens(t: Tensor, heads: int = 1) -> Tensor:
    """(N, heads*d, H, W) -> (N, heads, H*W, d). A view (no copy) for channels_last input when heads = 1."""
    n, c, h, w = t.shape
    t = t.permute(0, 2, 3, 1).reshape(n, h * w, heads, c // heads)
    return t.transpose(1, 2)


def from_tokens(t: Tensor, height: int, width: int) -> Tensor:
    """(N, heads, H*W, d) -> (N, heads*d, H, W), channels_last-strided."""
    n, heads, _, d = t.shape
    return t.transpose(1, 2).reshape(n, height, width, heads * d).permute(0, 3, 1, 2)


def sdpa_padding(device: torch.device, dk: int, dv: int) -> tuple[int, int]:
    """Zero columns to append to (q and k, v) before ``F.scaled_dot_product_attention`` on ``device``.

    * CPU: the flash kernel (O(L) memory) needs q, k and v of one width; otherwise SDPA falls back to the
      math kernel and its L x L matrix. So the narrower side is padded to the wider — only when they differ.
    * CUDA (and any other device): no padding to equal widths. The memory-efficient kernel takes q/k and v
      of different widths, and padding q/k of DANet PAM (C/8) to v's C would multiply the QK^T work by 8.
      Only a width that is not a multiple of 8 (e.g. BoTNet MHSA's d + H + W) is rounded up to one, which
      the fused kernels require; aligned widths (the usual case) go to SDPA as they are.

    Returns:
        (columns for q and k, columns for v); (0, 0) means "call SDPA as it is".
    """
    if device.type == 'cpu':
        if dk == dv:
            return 0, 0
        return (dv - dk, 0) if dk < dv else (0, dk - dv)
    return (-dk) % _CUDA_ALIGN, (-dv) % _CUDA_ALIGN


def sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``softmax(scale * q k^T) v`` through ``F.scaled_dot_product_attention``, on its O(L)-memory kernels.

    Widths are padded with zeros as :func:`sdpa_padding` decides for the device: padding q and k adds zero
    to every dot product, padding v adds zero output columns that are sliced off. Exact up to float rounding.
    Inputs whose last dimension is not unit-strided (tokens of an NCHW map) are copied to contiguous first:
    the fused kernels refuse them.

    On the CPU the attention runs in float32 (autocast off) and the result is cast back to v's dtype:
    the CPU flash kernel's bf16 backward is several times slower than its float32 one (measured 45 s
    against 7 s at L=4096, 8 heads of 64), while q, k, v cost only O(L d) memory either way.

    Args:
        q, k: (N, heads, L, dk). v: (N, heads, L, dv). scale: logit multiplier (passed explicitly).
    Returns:
        (N, heads, L, dv), dtype of v.
    """
    # the fused kernels need a unit stride on the last dim (NCHW tokens are strided): else HW x HW math
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    dv = v.shape[-1]
    pad_qk, pad_v = sdpa_padding(q.device, q.shape[-1], dv)
    if pad_qk:
        q = F.pad(q, (0, pad_qk))
        k = F.pad(k, (0, pad_qk))
    if pad_v:
        v = F.pad(v, (0, pad_v))
    if q.device.type == 'cpu' and (q.dtype != torch.float32 or torch.is_autocast_enabled('cpu')) \
            and q.dtype != torch.float64:
        dtype = v.dtype
        with torch.autocast('cpu', enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scale).to(dtype)
    else:
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return out[..., :dv] if pad_v else out


def attention_probs(q: Tensor, k: Tensor, scale: float, query: int | None, height: int, width: int) -> Tensor:
    """Naive attention probabilities for recording only.

    Returns (N, heads, HW, HW), or (N, heads, H, W) for the single query pixel ``query`` (flat index).
    """
    if query is not None:
        q = q[:, :, query:query + 1]
    probs = torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scale, dim=-1)
    if query is not None:
        return probs.reshape(probs.shape[0], probs.shape[1], height, width)
    return probs
