"""ML-Decoder (Ridnik et al., "ML-Decoder: Scalable and Versatile Classification Head", WACV 2023): learned
class (or group) queries cross-attend to the projected feature map; group fully connected decoding to logits."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from ._attend import cross_attend, query_probs
from .base import ClassificationHead, check_positive_int

__all__ = ['MLDecoderHead', 'MLDecoderLayer']


class MLDecoderLayer(nn.Module):
    """One ML-Decoder layer: a transformer decoder layer without self-attention among the queries.

    ``t <- norm1(t)``, ``t <- norm2(t + dropout(CA(t, m)))``, ``t <- norm3(t + dropout(FFN(t)))`` with
    ``CA(t, m) = proj(softmax(q k^T / sqrt(d)) v)``, ``q = attn.q(t)``, ``k = attn.k(m)``, ``v = attn.v(m)``
    and ``FFN = linear2(dropout(relu(linear1(.))))`` (post-norm, as the reference code's
    ``TransformerDecoderLayerOptimal``).

    Shapes: t (N, G, D), m (N, L, D) -> t (N, G, D); with ``probs=True`` also the (N, heads, G, L)
    attention weights (float32).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.q, self.attn.k, self.attn.v, self.attn.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, t: Tensor, memory: Tensor, probs: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        t = self.norm1(t)
        q, k = self.attn.q(t), self.attn.k(memory)
        t = self.norm2(t + self.dropout(self.attn.proj(cross_attend(q, k, self.attn.v(memory), self.heads))))
        t = self.norm3(t + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(t))))))
        if probs:
            return t, query_probs(q, k, self.heads)
        return t


@HEADS.register_module('ml_decoder')
class MLDecoderHead(ClassificationHead):
    """Query-based classification: each query reads the whole map, each query's vector decodes its classes.

    ``m = relu(embed(x))`` (tokens of width D, no positional embedding as in the paper); G queries
    ``t`` (one per class, or ``num_groups`` groups) go through ``depth`` :class:`MLDecoderLayer`; group
    fully connected decoding: ``logits[:, g * F + j] = t_g . duplicate_pooling[g, :, j] + bias`` with
    ``F = ceil(K / G)`` classes per group (the last group's surplus outputs are dropped).

    Args:
        in_channels: C. num_classes: K.
        num_groups: G = ``min(num_groups, K)``; the paper's default 100 gives one query per class up to
            100 classes and group decoding beyond (K = 1000: 100 queries of F = 10 classes each);
            ``None`` = K (one query per class at any K: 10x the decoder work at K = 1000).
        embed_dim: D (paper: 768). heads: attention heads (8; must divide D).
        ffn_dim: feed-forward width (paper: 2048).
        depth: decoder layers (paper: 1).
        dropout: dropout in the decoder layers (paper: 0.1). Unlike ``nn.MultiheadAttention`` the
            attention weights themselves get no dropout.
        learn_queries: learn the queries (default, as a "learned class query" head); ``False`` keeps
            them fixed random (a buffer), as the reference code does (``query_embed.requires_grad_(False)``).
        in_index: see :class:`ClassificationHead`.

    Shapes: x (N, C, H, W), any H x W -> logits (N, K).
    Recorded: under the head's name (N, G, H, W) = the last layer's attention of each query over the
    positions, averaged over heads (sums to 1 over positions; with one query per class (K <= num_groups)
    map k is what class k looked at, else map g what classes g*F .. g*F + F - 1 looked at, i.e. class k's
    map is map ``k // group_size``); earlier layers under ``name + '.layer{i}'``.
    """

    pooled_maps = '(N, G, H, W)'

    def __init__(self, in_channels: int, num_classes: int, *, num_groups: int | None = 100,
                 embed_dim: int = 768, heads: int = 8, ffn_dim: int = 2048, depth: int = 1,
                 dropout: float = 0.1, learn_queries: bool = True, in_index: int = -1) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index)
        name = 'MLDecoderHead'
        if num_classes is None:
            raise ConfigError(f'{name} needs num_classes (a positive integer), got None.')
        for arg, value in (('embed_dim', embed_dim), ('heads', heads), ('ffn_dim', ffn_dim), ('depth', depth)):
            check_positive_int(name, arg, value)
        check_positive_int(name, 'num_groups', num_groups, allow_none=True)
        if embed_dim % heads:
            raise ConfigError(f'{name} needs embed_dim divisible by heads, got embed_dim={embed_dim}, '
                              f'heads={heads}.')
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f'{name} dropout must be in [0, 1), got {dropout!r}.')
        self.num_groups = num_classes if num_groups is None else min(num_groups, num_classes)
        self.group_size = math.ceil(num_classes / self.num_groups)
        self.embed_dim, self.heads, self.depth = embed_dim, heads, depth
        self.embed = nn.Linear(in_channels, embed_dim)
        queries = torch.randn(self.num_groups, embed_dim)  # nn.Embedding's N(0, 1), as the reference code
        if learn_queries:
            self.query_embed = nn.Parameter(queries)
        else:
            self.register_buffer('query_embed', queries)
        self.layers = nn.ModuleList(MLDecoderLayer(embed_dim, heads, ffn_dim, dropout) for _ in range(depth))
        self.duplicate_pooling = nn.Parameter(torch.empty(self.num_groups, embed_dim, self.group_size))
        nn.init.xavier_normal_(self.duplicate_pooling)
        self.duplicate_pooling_bias = nn.Parameter(torch.zeros(num_classes))

    def decode(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """(N, C, H, W) -> (N, G, D): the decoded queries (records their maps when recording)."""
        x = self.select(feats)
        h, w = x.shape[2:]
        memory = F.relu(self.embed(x.flatten(2).transpose(1, 2)))  # (N, HW, D)
        t = self.query_embed.to(memory.dtype).expand(x.shape[0], -1, -1)
        for i, layer in enumerate(self.layers):
            if not self.recording:
                t = layer(t, memory)
                continue
            t, probs = layer(t, memory, probs=True)  # probs (N, heads, G, HW)
            self.record_map(probs.mean(dim=1).unflatten(-1, (h, w)), '' if i == self.depth - 1 else f'.layer{i}')
        return t

    def forward(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """Args: feats (N, C, H, W) or a list of maps. Returns: logits (N, K)."""
        t = self.decode(feats)
        out = torch.einsum('ngd,gdf->ngf', t, self.duplicate_pooling.to(t.dtype)).flatten(1)
        return out[:, :self.num_classes] + self.duplicate_pooling_bias.to(t.dtype)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, num_groups={self.num_groups}, embed_dim={self.embed_dim}, '
                f'heads={self.heads}, depth={self.depth}')
