"""Attention modules, each registered in ``attnkit.registry.ATTENTION`` under a short name.

channel: ``se``, ``eca``; spatial/mixed: ``cbam``, ``coord``, ``simam``; context/self-attention: ``gc``,
``nonlocal``, ``mhsa``, ``danet_pam``, ``danet_cam``, ``criss_cross``. Build one with
``create_attention('se', 64)`` (= ``attnkit.build_attention``), place modules in any network by module name
with ``insert(model, dict(type='cbam', after=['layer2.*']))`` and collect maps with ``record(model)``.

Attention-guided downsampling (registry ``POOLING``, :mod:`attnkit.attention.pooling`): ``lip``, ``softpool``,
``guided``, ``avg``; ``create_pooling('lip', 64)`` (= ``attnkit.builder.build_pooling``).
"""
from ..builder import build_attention, build_pooling
from .base import AttentionModule, memory_format_of
from .cbam import CBAMModule
from .coord import CoordAttention
from .criss_cross import CrissCrossAttention
from .danet_cam import ChannelAttention
from .danet_pam import PositionAttention
from .eca import ECAModule, eca_kernel_size
from .gc import GlobalContextBlock
from .insert import Attachment, InsertedPlace, attachments, detach, insert, reattach, replace_module
from .mhsa import MHSA
from .non_local import NonLocalBlock
from .pooling import LIP, AttentionGuidedPool, AvgDownsample, Downsampler, SoftPool
from .record import Recordable, record
from .se import SEModule
from .simam import SimAM

create_attention = build_attention  # create_attention('se', channels, reduction=8)
create_pooling = build_pooling  # create_pooling('lip', channels)

__all__ = ['insert', 'attachments', 'reattach', 'replace_module', 'detach', 'InsertedPlace', 'Attachment',
           'AttentionModule', 'memory_format_of', 'record', 'create_attention', 'SEModule', 'ECAModule',
           'eca_kernel_size', 'CBAMModule', 'CoordAttention', 'SimAM', 'GlobalContextBlock', 'NonLocalBlock',
           'MHSA', 'PositionAttention', 'ChannelAttention', 'CrissCrossAttention', 'Recordable', 'create_pooling',
           'Downsampler', 'LIP', 'SoftPool', 'AttentionGuidedPool', 'AvgDownsample']
