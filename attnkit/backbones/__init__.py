"""Backbones: ResNet / ResNeXt with attention slots and pretrained loading, and any timm CNN (registered in
BACKBONES)."""
from .blocks import BasicBlock, Bottleneck
from .hf_backbone import HFBackbone
from .norm import build_norm
from .pretrained import LoadReport, load_pretrained, read_state_dict, resolve_pretrained
from .resnet import ResNet, ResNeXt
from .timm_backbone import TimmBackbone

__all__ = ['ResNet', 'ResNeXt', 'TimmBackbone', 'HFBackbone', 'BasicBlock', 'Bottleneck', 'build_norm',
           'LoadReport', 'load_pretrained', 'read_state_dict', 'resolve_pretrained']
