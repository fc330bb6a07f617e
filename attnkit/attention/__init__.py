"""Attention modules, each registered in ``attnkit.registry.ATTENTION`` under a short name.

channel: ``se``, ``eca``; spatial/mixed: ``cbam``, ``coord``, ``simam``; context/self-attention: ``gc``,
``nonlocal``, ``mhsa``, ``danet_pam``, ``danet_cam``, ``criss_cross``. Build one with
``create_attention('se', 64)`` (= ``attnkit.build_attention``), place modules in any network by module name
with ``insert(model, dict(type='cbam', after=['layer2.*']))`` and collect maps with ``record(model)``.
"""
from ..builder import build_attention
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
from .record import record
from .se import SEModule
from .simam import SimAM

create_attention = build_attention  # create_attention('se', channels, reduction=8)

__all__ = ['insert', 'attachments', 'reattach', 'replace_module', 'detach', 'InsertedPlace', 'Attachment',
           'AttentionModule', 'memory_format_of', 'record', 'create_attention', 'SEModule', 'ECAModule',
           'eca_kernel_size', 'CBAMModule', 'CoordAttention', 'SimAM', 'GlobalContextBlock', 'NonLocalBlock',
           'MHSA', 'PositionAttention', 'ChannelAttention', 'CrissCrossAttention']
