"""Necks: FPN, ASPP, ViTDet's SimpleFeaturePyramid (registered in NECKS)."""
from . import aspp  # noqa: F401  (registers ASPP)
from .fpn import FPN
from .simple_pyramid import SimpleFeaturePyramid

__all__ = ['FPN', 'SimpleFeaturePyramid']
