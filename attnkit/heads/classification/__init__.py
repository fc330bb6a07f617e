"""Classification heads (HEADS), each mapping a feature map (N, C, H, W) of any size to logits (N, K):

* ``linear``: global average pooling + dropout + linear (:class:`LinearClsHead`);
* ``attnpool``: CLIP's attention pooling, the mean token queries all positions (:class:`AttentionPoolHead`);
* ``class_attention``: CaiT class-attention blocks on a learned class token (:class:`ClassAttentionHead`);
* ``ml_decoder``: ML-Decoder, learned class/group queries cross-attend to the map (:class:`MLDecoderHead`).

Build with ``build(HEADS, dict(type='attnpool', feat_size=7), in_channels=C, num_classes=K)``; the attention
heads record what their tokens looked at inside ``attnkit.attention.record(model)`` (see ``pooled_maps``).
"""
from .attnpool import AttentionPoolHead
from .base import ClassificationHead
from .class_attention import ClassAttentionBlock, ClassAttentionHead
from .linear import LinearClsHead
from .ml_decoder import MLDecoderHead, MLDecoderLayer

__all__ = ['ClassificationHead', 'LinearClsHead', 'AttentionPoolHead', 'ClassAttentionHead', 'ClassAttentionBlock',
           'MLDecoderHead', 'MLDecoderLayer']
