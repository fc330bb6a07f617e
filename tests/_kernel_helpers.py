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


def check_form_and_tail(module: torch.nn.Module, stock: torch.nn.Module, native: torch.nn.Module,
                        x: torch.Tensor, identity: torch.Tensor, tol: float = 1e-5) -> torch.Tensor:
    """Asserts, without autograd: ``native(x)`` equals the eager ``module(x)`` and the stock form's output within
    ``tol`` (relative) and keeps x's memory format; ``native.forward_residual(x, identity)`` equals
    ``relu(module(x) + identity)``; neither input is written. Returns ``module(x)``."""
    before = (x.clone(), identity.clone())
    with torch.no_grad():
        expected = module(x)
        got = native(x)
        assert rel_error(got, expected) <= tol and rel_error(got, stock(x)) <= tol
        assert got.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(
            memory_format=torch.channels_last)
        assert rel_error(native.forward_residual(x, identity), torch.relu(expected + identity)) <= tol
    assert torch.equal(x, before[0]) and torch.equal(identity, before[1])
    return expected


def kernel_forms(kind: str, channels: int, seed: int, kernel, gamma: bool = True,
                 **opts) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(the eager ``kind`` attention module with random norms and gamma, its inference form on stock ops, its form
    through ``kernel``)."""
    from attnkit.builder import build_attention
    from attnkit.deploy.attention_fast import inference_form

    from _norms import randomise_norms
    torch.manual_seed(seed)
    module = build_attention(dict(type=kind, **opts), channels, identity_init=gamma).eval()
    randomise_norms(module, seed, gammas=True)
    stock, native = inference_form(module), inference_form(module)
    assert native.use_native(kernel)
    return module, stock, native
