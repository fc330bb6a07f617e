"""Modular co-attention (MCAN, Yu et al., CVPR 2019), encoder-decoder form, on a CNN grid.

Encoder: ``depth`` self-attention (SA) layers over the question tokens. Decoder: ``depth`` self-guided
attention (SGA) layers over the image grid tokens: self-attention over the grid, then question-guided
cross-attention (grid queries, question keys/values). All attention goes through
``F.scaled_dot_product_attention`` with equal q/k/v head widths (the CPU flash kernel; no H*W x H*W matrix
is built). Then attentional pooling of each side (AttFlat), sum, LayerNorm, classifier. The image
pooling weights over the grid are the question-guided attention map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import HEADS
from .common import grid_tokens, sine_positions

__all__ = ['MCANHead', 'MultiHeadAttention', 'AttFlat', 'CountPool']


class MultiHeadAttention(nn.Module):
    """Multi-head attention via SDPA. Shapes: x (N, Lq, D), kv (N, Lk, D), key_mask (N, Lk) bool -> (N, Lq, D)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f'MultiHeadAttention: dim {dim} is not divisible by heads {heads}.')
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, -1, h, d // h).transpose(1, 2)

        mask = None if key_mask is None else key_mask[:, None, None, :].bool()
        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(kv)), split(self.v(kv)), attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(n, lq, d))


class _FFN(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, dim))


class _SA(nn.Module):
    """Self-attention + FFN, post-norm residuals (as MCAN)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.att = MultiHeadAttention(dim, heads, dropout)
        self.ffn = _FFN(dim, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.att(x, x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class _SGA(nn.Module):
    """Image self-attention, question-guided attention, FFN."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_att = MultiHeadAttention(dim, heads, dropout)
        self.guided_att = MultiHeadAttention(dim, heads, dropout)
        self.ffn = _FFN(dim, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def image_part(self, y: torch.Tensor) -> torch.Tensor:
        """Self-attention over the grid tokens (N, L, D): no question involved."""
        return self.norm1(y + self.drop(self.self_att(y, y)))

    def question_part(self, y: torch.Tensor, x: torch.Tensor, x_mask: torch.Tensor | None) -> torch.Tensor:
        """Question-guided attention and FFN: grid tokens (N, L, D), question tokens (N, Lq, D)."""
        y = self.norm2(y + self.drop(self.guided_att(y, x, x_mask)))
        return self.norm3(y + self.drop(self.ffn(y)))

    def forward(self, y: torch.Tensor, x: torch.Tensor, x_mask: torch.Tensor | None) -> torch.Tensor:
        return self.question_part(self.image_part(y), x, x_mask)


class AttFlat(nn.Module):
    """Attentional pooling: (N, L, D) tokens -> (N, out_dim), and the weights (N, L) averaged over glimpses."""

    def __init__(self, dim: int, hidden: int, glimpses: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, glimpses))
        self.merge = nn.Linear(dim * glimpses, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.mlp(x).float()  # (N, L, G)
        if mask is not None:
            logits = logits.masked_fill(~mask.bool().unsqueeze(-1), float('-inf'))
        weights = F.softmax(logits, dim=1).to(x.dtype)
        pooled = torch.einsum('nlg,nld->ngd', weights, x).flatten(1)
        return self.merge(pooled), weights.mean(-1)


class CountPool(nn.Module):
    """Sigmoid-gated *sum* pooling: (N, L, D) tokens -> (N, out_dim).

    Softmax pooling (:class:`AttFlat`) normalises its weights, so two circles and one circle pool to the same
    vector; here each of ``glimpses`` gates scores every token in (0, 1) independently and the gated tokens
    are summed (divided by ``norm``, a typical count), so the result grows with the number of selected
    tokens and "how many" questions can be answered from it.
    """

    def __init__(self, dim: int, glimpses: int, out_dim: int, norm: float = 4.0) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, glimpses)
        self.merge = nn.Linear(dim * glimpses, out_dim)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.gate(x))  # (N, L, G)
        return self.merge(torch.einsum('nlg,nld->ngd', gates, x).flatten(1) / self.norm)


@HEADS.register_module('mcan')
class MCANHead(nn.Module):
    """MCAN fusion head over question tokens and an image grid.

    Args:
        num_answers: classifier outputs A.
        img_channels: grid channels C (``None``: question-only — the SA encoder, pooling and classifier).
        q_channels: question token width Dq.
        dim: model width (512 in MCAN-small); heads: attention heads; ffn: FFN hidden width.
        depth: number of SA and of SGA layers (6 in the paper).
        flat_hidden, glimpses, out_dim: AttFlat sizes.
        dropout: dropout everywhere.
        pos_embed: add fixed 2-D sine positions to the grid tokens (grid cells have no order otherwise).
        count_glimpses: >0 adds :class:`CountPool` over the grid tokens with this many gates (its output is
            summed with the two AttFlat vectors) — softmax pooling alone cannot count; 0 = plain MCAN.

    Forward:
        img: (N, C, H, W) or ``None``; q: (N, L, Dq); q_mask: (N, L) bool (true = token).
        image_index: optional (N,) long: ``img`` then holds M <= N distinct images (M, C, H, W) and question i
            looks at ``img[image_index[i]]``. Everything before the question enters (token projection,
            positions, the first layer's grid self-attention) then runs once per image, not once per question
            (same result; ~10 questions per image in the demo data).
        Returns ``{'logits': (N, A), 'attention': (N, H, W) grid pooling weights or None}``.
    """

    def __init__(self, num_answers: int, img_channels: int | None, q_channels: int, dim: int = 512, heads: int = 8,
                 ffn: int = 2048, depth: int = 6, flat_hidden: int = 512, glimpses: int = 1, out_dim: int = 1024,
                 dropout: float = 0.1, pos_embed: bool = True, count_glimpses: int = 0) -> None:
        super().__init__()
        self.q_proj = nn.Linear(q_channels, dim) if q_channels != dim else nn.Identity()
        self.encoder = nn.ModuleList(_SA(dim, heads, ffn, dropout) for _ in range(depth))
        self.q_flat = AttFlat(dim, flat_hidden, glimpses, out_dim, dropout)
        self.use_image = bool(img_channels)
        if self.use_image:
            self.img_proj = nn.Sequential(nn.Linear(img_channels, dim), nn.LayerNorm(dim))
            self.decoder = nn.ModuleList(_SGA(dim, heads, ffn, dropout) for _ in range(depth))
            self.img_flat = AttFlat(dim, flat_hidden, glimpses, out_dim, dropout)
            self.count = CountPool(dim, count_glimpses, out_dim) if count_glimpses > 0 else None
        self.pos_embed = pos_embed
        self.norm = nn.LayerNorm(out_dim)
        self.classifier = nn.Linear(out_dim, num_answers)
        self.dim = dim

    def forward(self, img: torch.Tensor | None, q: torch.Tensor, q_mask: torch.Tensor | None = None,
                image_index: torch.Tensor | None = None) -> dict:
        x = self.q_proj(q)
        mask = None if q_mask is None else q_mask.bool()
        for layer in self.encoder:
            x = layer(x, mask)
        fused, _ = self.q_flat(x, mask)
        attention = None
        if self.use_image:
            if img is None:
                raise ValueError('MCANHead was built with img_channels but got no image grid.')
            h, w = img.shape[-2:]
            y = self.img_proj(grid_tokens(img))
            if self.pos_embed:
                y = y + sine_positions(h, w, self.dim, y.device, y.dtype)
            if self.decoder:
                y = self.decoder[0].image_part(y)
            if image_index is not None:
                y = y[image_index.to(y.device)]  # (M, L, D) per image -> (N, L, D) per question
            for i, layer in enumerate(self.decoder):
                y = layer.question_part(y if i == 0 else layer.image_part(y), x, mask)
            img_vec, weights = self.img_flat(y, None)
            fused = fused + img_vec
            if self.count is not None:
                fused = fused + self.count(y)
            attention = weights.view(-1, h, w)
        return {'logits': self.classifier(self.norm(fused)), 'attention': attention}
