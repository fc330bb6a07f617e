"""Necks: FPN, ASPP (registered in NECKS)."""
from . import aspp  # noqa: F401  (registers ASPP)
from .fpn import FPN

__all__ = ['FPN']
