"""Stacked attention networks (Yang et al., CVPR 2016): the question attends over the image grid in hops.

Each hop: ``h = tanh(W_I v + W_Q u)``, ``p = softmax(w_p h)`` over the H*W grid cells, ``u <- u + sum p v``.
The final ``u`` goes to the answer classifier. The last hop's ``p`` is the question-guided attention map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import HEADS
from .common import grid_tokens, masked_mean

__all__ = ['SANHead']


class _AttentionHop(nn.Module):
    def __init__(self, dim: int, att_dim: int, dropout: float) -> None:
        super().__init__()
        self.img = nn.Linear(dim, att_dim, bias=False)
        self.query = nn.Linear(dim, att_dim)
        self.drop = nn.Dropout(dropout)
        self.logit = nn.Linear(att_dim, 1)

    def forward(self, v: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.img(v) + self.query(u).unsqueeze(1))  # (N, M, att_dim)
        p = F.softmax(self.logit(self.drop(h)).squeeze(-1).float(), dim=1).to(v.dtype)  # (N, M)
        return u + torch.bmm(p.unsqueeze(1), v).squeeze(1), p


@HEADS.register_module('san')
class SANHead(nn.Module):
    """Stacked-attention fusion head.

    Args:
        num_answers: classifier outputs A.
        img_channels: channels C of the image grid (``None``: question-only, no attention).
        q_channels: width of the question token features.
        dim: common width of image and question vectors.
        att_dim: width of the attention MLP.
        hops: attention hops (2 in the paper).
        dropout: dropout before the classifier and inside the attention.

    Forward:
        img: (N, C, H, W) grid or ``None``; q: (N, L, Dq) question tokens; q_mask: (N, L) bool (true = token).
        image_index: optional (N,) long: ``img`` holds M distinct images (M, C, H, W), question i looks at
            ``img[image_index[i]]``; the grid projection then runs once per image.
        Returns ``{'logits': (N, A), 'attention': (N, H, W) last-hop weights or None}``.
    """

    def __init__(self, num_answers: int, img_channels: int | None, q_channels: int, dim: int = 512,
                 att_dim: int = 256, hops: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        self.q_proj = nn.Sequential(nn.Linear(q_channels, dim), nn.Tanh())
        self.img_proj = nn.Sequential(nn.Linear(img_channels, dim), nn.Tanh()) if img_channels else None
        self.hops = nn.ModuleList(_AttentionHop(dim, att_dim, dropout) for _ in range(hops)) if img_channels else None
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_answers))

    def forward(self, img: torch.Tensor | None, q: torch.Tensor, q_mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> dict:
        u = self.q_proj(masked_mean(q, q_mask))
        attention = None
        if self.img_proj is not None:
            if img is None:
                raise ValueError('SANHead was built with img_channels but got no image grid.')
            h, w = img.shape[-2:]
            v = self.img_proj(grid_tokens(img))
            if image_index is not None:
                v = v[image_index.to(v.device)]  # (M, HW, dim) per image -> (N, HW, dim) per question
            p = None
            for hop in self.hops:
                u, p = hop(v, u)
            attention = p.view(-1, h, w)
        return {'logits': self.classifier(u), 'attention': attention}
