"""Shared test helpers of the native-kernel tests: a relative error and a call counter on a binding's method."""
from __future__ import annotations

import pytest
import torch


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(max |b|, 1), in fp32."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1.0)).item()


class CallCounter:
    """Counts the calls of ``cls.method`` (a kernel binding's entry: ``CBAMKernel.run``, ``GCKernel.shift``, ...)
    for the rest of the test, calling through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> None:
        self.calls = 0
        original = getattr(cls, method)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(cls, method, counted)
