"""Detection heads: FCOS and RetinaNet (registered in HEADS)."""
from .anchors import AnchorGenerator, decode_boxes, encode_boxes
from .fcos import FCOSHead
from .retinanet import RetinaHead

__all__ = ['FCOSHead', 'RetinaHead', 'AnchorGenerator', 'encode_boxes', 'decode_boxes']
