"""Backbones: ResNet / ResNeXt with attention slots and pretrained loading (registered in BACKBONES)."""
from .blocks import BasicBlock, Bottleneck
from .norm import build_norm
from .pretrained import LoadReport, load_pretrained, read_state_dict, resolve_pretrained
from .resnet import ResNet, ResNeXt

__all__ = ['ResNet', 'ResNeXt', 'BasicBlock', 'Bottleneck', 'build_norm', 'LoadReport', 'load_pretrained',
           'read_state_dict', 'resolve_pretrained']
