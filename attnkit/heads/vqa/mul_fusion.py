"""The plain VQA baseline's head: pooled image vector x question vector, no attention anywhere.

``v = ReLU(W_v mean_{h,w} img)``, ``u = ReLU(W_q mean_l q)``, ``logits = MLP(v * u)`` (multiplicative fusion,
as in the "deeper LSTM Q + norm I" baseline of Antol et al., ICCV 2015, with a bag-of-words question when the
encoder is ``bow``). It exists so that the attention heads (``san``, ``mcan``) can be compared with a model that
sees the same image and question through the same Trainer and budget, but cannot look at any one place.
"""
from __future__ import annotations

import torch
from torch import nn

from ...registry import HEADS
from .common import masked_mean

__all__ = ['MulFusionHead']


@HEADS.register_module('mul_fusion')
class MulFusionHead(nn.Module):
    """Global-average-pooled image and mean question token, fused by an element-wise product.

    Args:
        num_answers: classifier outputs A.
        img_channels: channels C of the image grid (``None``: question-only).
        q_channels: width Dq of the question token features.
        dim: width of the fused vector.
        hidden: width of the classifier's hidden layer.
        dropout: dropout before each classifier layer.

    Forward:
        img: (M, C, H, W) grid or ``None``; q: (N, L, Dq) tokens; q_mask: (N, L) bool (true = token);
        image_index: optional (N,) long mapping question i to ``img[image_index[i]]``.
        Returns ``{'logits': (N, A), 'attention': None}`` (the model looks at no particular place).
    """

    def __init__(self, num_answers: int, img_channels: int | None, q_channels: int, dim: int = 256,
                 hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.q_proj = nn.Sequential(nn.Linear(q_channels, dim), nn.ReLU(inplace=True))
        self.img_proj = nn.Sequential(nn.Linear(img_channels, dim), nn.ReLU(inplace=True)) if img_channels else None
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(hidden, num_answers))

    def forward(self, img: torch.Tensor | None, q: torch.Tensor, q_mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> dict:
        fused = self.q_proj(masked_mean(q, q_mask))  # (N, dim)
        if self.img_proj is not None:
            if img is None:
                raise ValueError('MulFusionHead was built with img_channels but got no image grid.')
            v = self.img_proj(img.mean(dim=(2, 3)))  # (M, dim): one vector per image
            if image_index is not None:
                v = v[image_index.to(v.device)]  # per image -> per question
            fused = fused * v
        return {'logits': self.classifier(fused), 'attention': None}
