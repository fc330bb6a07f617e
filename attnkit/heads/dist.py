"""Loss normalisers that do not depend on the number of processes.

With data-parallel training (DDP) every process computes a loss on its share of the global batch and the
gradients are *averaged* over the W processes. A loss normalised by a local count (positives, labelled
pixels, questions) then weighs each process's samples by 1 / its own count, so the update leans towards the
process that drew few objects and differs from one process training on the whole batch.

:func:`global_normalizer` turns a local count into ``max(global count, min_value) / W``: each process then
divides its local *sum* by it, DDP's averaging multiplies by 1 / W, and the result is the sum over the
global batch divided by the global count, exactly as with one process and the whole batch.

It uses ``torch.distributed`` directly (heads do not know about Accelerate): an ``all_reduce`` on the count's
device, which is queued on the stream like any other kernel (no host synchronisation). Without an
initialised process group, or with one process, nothing is communicated. Every process must call it the same
number of times in the same order, so losses call it unconditionally (never inside a data-dependent branch).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ['world_size', 'global_normalizer']


def world_size() -> int:
    """The number of processes of the default process group (1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def global_normalizer(count: Tensor, min_value: float = 1.0) -> Tensor:
    """The per-process divisor that makes a DDP-averaged sum equal the global-batch mean.

    Args:
        count: () or (1,) local count (any dtype, any device; e.g. ``pos.sum()``). Not differentiated.
        min_value: lower bound of the *global* count (a batch without positives still divides by it).

    Returns:
        () float32 tensor on ``count``'s device: ``max(sum over processes of count, min_value) / W``;
        ``max(count, min_value)`` with one process or no process group.
    """
    total = count.detach().reshape(()).to(torch.float32)
    w = world_size()
    if w > 1:
        total = total.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.clamp(min=min_value) / w
