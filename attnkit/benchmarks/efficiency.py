"""Machine efficiency of a timed model: FLOPs per call (torch's FLOP counter) and the machine's measured fp32 peak.

* :func:`count_flops`: ``torch.utils.flop_counter.FlopCounterMode`` around one call. It counts the operators
  torch has FLOP formulas for: convolutions, ``mm`` / ``addmm`` / ``bmm`` / ``baddbmm`` / ``matmul`` (so
  ``nn.Linear``) and scaled-dot-product attention, as 2 FLOPs per multiply-add. Elementwise ops, norms,
  pooling, softmax, interpolation and NMS are not counted (they are a few % of a CNN's arithmetic, but can be a
  larger share of its time).
* :func:`sgemm_peak`: the best rate of ``torch.mm`` on two n×n fp32 matrices (n = 4096 when it fits the time
  budget, else 2048 or 1024) with torch's current threads: what this machine's BLAS reaches on the friendliest
  fp32 work, the practical ceiling for convolutions.

``achieved GFLOP/s = counted FLOPs / median seconds per call``; ``% of peak`` is that over :func:`sgemm_peak`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

__all__ = ['count_flops', 'sgemm_peak', 'efficiency']


def count_flops(call: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of one ``call()`` (under ``torch.no_grad``) as torch's FLOP counter counts them.

    Returns:
        ``(total, {operator name: flops})``, operators with a non-zero count only.
    """
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        call()
    by_op = {str(op).removeprefix('aten.'): int(n) for op, n in counter.get_flop_counts().get('Global', {}).items()
             if n}
    return int(counter.get_total_flops()), by_op


def sgemm_peak(budget_s: float = 2.5, sizes: tuple[int, ...] = (4096, 2048, 1024)) -> dict[str, Any]:
    """Measured fp32 matmul rate: best of several ``torch.mm`` calls of n×n matrices, within ``budget_s``.

    A 1024² probe estimates the rate; n is the largest of ``sizes`` whose call fits a third of the budget, and
    calls repeat until the budget is spent (at least two). Uses torch's current thread count.

    Returns:
        ``{'gflops': best GFLOP/s, 'n': n, 'calls': timed calls, 'threads': torch threads, 'seconds': spent}``.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(1024, 1024, generator=gen)
    torch.mm(probe, probe)  # warm-up: BLAS thread pool and packing buffers
    t = time.perf_counter()
    torch.mm(probe, probe)
    rate = 2 * 1024 ** 3 / max(time.perf_counter() - t, 1e-9)
    n = next((s for s in sizes if 2 * s ** 3 / rate <= budget_s / 3), min(sizes))
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    best, calls = float('inf'), 0
    while calls < 2 or time.perf_counter() - start < budget_s - best:
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
        calls += 1
        if calls >= 20:
            break
    return {'gflops': 2 * n ** 3 / best / 1e9, 'n': n, 'calls': calls, 'threads': torch.get_num_threads(),
            'seconds': time.perf_counter() - start}


def efficiency(flops: int | None, seconds: float, peak_gflops: float | None) -> dict[str, float | None]:
    """``{'gflops_per_s': achieved rate, 'pct_of_peak': % of the measured peak}`` (None where unknown)."""
    if not flops or seconds <= 0:
        return {'gflops_per_s': None, 'pct_of_peak': None}
    rate = flops / seconds / 1e9
    return {'gflops_per_s': rate, 'pct_of_peak': 100 * rate / peak_gflops if peak_gflops else None}
