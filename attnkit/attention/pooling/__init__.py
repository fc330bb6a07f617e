"""Attention-guided downsampling, registered in ``attnkit.registry.POOLING``: ``lip`` (Local Importance-based
Pooling), ``softpool``, ``guided`` (weights from any spatial attention module) and the ``avg`` baseline.

Every one is built as ``build_pooling('lip', channels)`` (``attnkit.builder.build_pooling``), maps
(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)) and records its importance map (N, 1, H, W) inside
``attnkit.attention.record(model)``. ResNet uses them through ``downsample=dict(type='lip', places=...)``.
"""
from .avg import AvgDownsample
from .base import Downsampler, InstanceNorm, exp_weighted_pool, normalised_exp
from .guided import AttentionGuidedPool
from .lip import LIP
from .softpool import SoftPool

__all__ = ['Downsampler', 'LIP', 'SoftPool', 'AttentionGuidedPool', 'AvgDownsample', 'InstanceNorm',
           'exp_weighted_pool', 'normalised_exp']
