"""One timing rule for the benchmark modules: median and min wall time of a callable, CUDA synchronised."""
from __future__ import annotations

import statistics
import time
from typing import Callable

__all__ = ['time_call']


def time_call(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> tuple[float, float]:
    """(median ms, min ms) of ``repeats`` calls of ``fn`` after ``warmup`` calls; on CUDA each call is timed to
    the end of its kernels (``torch.cuda.synchronize``)."""
    import torch

    def sync() -> None:
        if device.startswith('cuda'):
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)
