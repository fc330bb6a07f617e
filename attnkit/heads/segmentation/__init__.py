"""Segmentation heads (HEADS): ``fcn``, ``danet``, ``ccnet``, ``semantic_fpn``, ``deeplabv3plus``."""
from .base import BaseDecodeHead, ConvBNReLU, seg_cross_entropy
from .ccnet import CCHead
from .danet import DAHead
from .deeplabv3plus import DeepLabV3PlusHead
from .fcn import FCNHead
from .semantic_fpn import SemanticFPNHead

__all__ = ['BaseDecodeHead', 'ConvBNReLU', 'seg_cross_entropy', 'FCNHead', 'DAHead', 'CCHead',
           'SemanticFPNHead', 'DeepLabV3PlusHead']
