"""CaiT class attention (Touvron et al., "Going deeper with Image Transformers", ICCV 2021) as a head on a
CNN feature map: a learned class token attends to [class token; positions] in a few blocks."""
from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import Mlp, trunc_normal_
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from ._attend import cross_attend, query_logits
from .base import ClassificationHead, check_positive_int

__all__ = ['ClassAttentionHead', 'ClassAttentionBlock']


class ClassAttentionBlock(nn.Module):
    """One CaiT class-attention block (timm's ``LayerScaleBlockClassAttn``; same parameter names).

    ``u = [cls; x]``, ``cls <- cls + gamma_1 * CA(norm1(u))``, ``cls <- cls + gamma_2 * MLP(norm2(cls))`` where
    ``CA`` = ``proj(softmax(q k^T / sqrt(d)) v)`` with ``q = attn.q(u_0)``, ``k = attn.k(u)``, ``v = attn.v(u)``.
    The positions x are not updated.

    Shapes: cls (N, 1, D), x (N, L, D) -> cls (N, 1, D); with ``logits=True`` also the (N, heads, 1 + L)
    attention logits of the class token (float32).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, layer_scale_init: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.q, self.attn.k, self.attn.v = (nn.Linear(dim, dim, bias=qkv_bias) for _ in range(3))
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def forward(self, cls: Tensor, x: Tensor, logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        u = self.norm1(torch.cat([cls, x], dim=1))
        q, k = self.attn.q(u[:, :1]), self.attn.k(u)
        attended = self.attn.proj(cross_attend(q, k, self.attn.v(u), self.heads))
        cls = cls + self.gamma_1.to(cls.dtype) * attended
        cls = cls + self.gamma_2.to(cls.dtype) * self.mlp(self.norm2(cls))
        if logits:
            return cls, query_logits(q, k, self.heads)[:, :, 0]
        return cls


@HEADS.register_module('class_attention')
class ClassAttentionHead(ClassificationHead):
    """A learned class token reads the feature map through ``depth`` CaiT class-attention blocks.

    Tokens ``x_i = proj(feature at position i)`` (``proj`` = identity unless ``embed_dim`` is set);
    ``cls`` starts as a learned vector and goes through the blocks (see :class:`ClassAttentionBlock`:
    pre-LayerNorm, class attention with residual, MLP with residual, LayerScale ``gamma`` initialised
    to ``layer_scale_init``); ``logits = fc(dropout(norm(cls)))``. As in CaiT the positions get no
    further update; unlike a ViT they carry no positional embedding (the CNN's padding encodes position).
    Block parameter names follow timm's CaiT ``blocks_token_only.*`` (timm's ``head`` is ``fc`` here).

    Args:
        in_channels: C. num_classes: K.
        depth: class-attention blocks (CaiT: 2).
        heads: attention heads; ``None`` = D // 64, 1 when D < 64. Must divide D.
        embed_dim: token width D; ``None`` = C (no projection), else a linear projection C -> D first.
        mlp_ratio: MLP hidden width / D (4).
        qkv_bias: bias in q, k, v (CaiT: True).
        layer_scale_init: initial LayerScale (CaiT: 1e-5; 1.0 disables the damping).
        dropout: dropout on the pooled vector before ``fc``.
        in_index: see :class:`ClassificationHead`.

    Shapes: x (N, C, H, W), any H x W -> logits (N, K); :meth:`pool` -> (N, D).
    Recorded: under the head's name (N, heads, H, W) = the last block's class-token attention over the
    positions, renormalised to sum to 1 (softmax over the position logits); under ``name + '.cls'``
    (N, heads) the share the class token gave itself (raw position weights = map * (1 - cls share));
    blocks before the last under ``name + '.block{i}'`` / ``name + '.block{i}.cls'``.
    """

    pooled_maps = '(N, heads, H, W)'

    def __init__(self, in_channels: int, num_classes: int, *, depth: int = 2, heads: int | None = None,
                 embed_dim: int | None = None, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 layer_scale_init: float = 1e-5, dropout: float = 0.0, in_index: int = -1) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index)
        name = 'ClassAttentionHead'
        if num_classes is None:
            raise ConfigError(f'{name} needs num_classes (a positive integer), got None.')
        check_positive_int(name, 'depth', depth)
        check_positive_int(name, 'embed_dim', embed_dim, allow_none=True)
        dim = embed_dim or in_channels
        heads = max(1, dim // 64) if heads is None else heads
        check_positive_int(name, 'heads', heads)
        if dim % heads:
            raise ConfigError(f'{name} needs the token width ({dim}) divisible by heads ({heads}); '
                              f'pass heads= a divisor of {dim}.')
        if mlp_ratio <= 0:
            raise ConfigError(f'{name} mlp_ratio must be positive, got {mlp_ratio!r}.')
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f'{name} dropout must be in [0, 1), got {dropout!r}.')
        self.embed_dim, self.heads, self.depth = dim, heads, depth
        self.proj = nn.Linear(in_channels, dim) if embed_dim is not None else nn.Identity()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks_token_only = nn.ModuleList(
            ClassAttentionBlock(dim, heads, mlp_ratio, qkv_bias, layer_scale_init) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_cait)

    def pool(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """(N, C, H, W) -> (N, D): the normalised class token (records its maps when recording)."""
        x = self.select(feats)
        h, w = x.shape[2:]
        tokens = self.proj(x.flatten(2).transpose(1, 2))  # (N, HW, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype)
        for i, block in enumerate(self.blocks_token_only):
            if not self.recording:
                cls = block(cls, tokens)
                continue
            cls, logits = block(cls, tokens, logits=True)  # logits (N, heads, 1 + HW)
            suffix = '' if i == self.depth - 1 else f'.block{i}'
            self.record_map(torch.softmax(logits[..., 1:], dim=-1).unflatten(-1, (h, w)), suffix)
            self.record_map(torch.softmax(logits, dim=-1)[..., 0], suffix + '.cls')
        return self.norm(cls[:, 0])

    def forward(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """Args: feats (N, C, H, W) or a list of maps. Returns: logits (N, K)."""
        return self.fc(self.dropout(self.pool(feats)))

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, embed_dim={self.embed_dim}, depth={self.depth}, heads={self.heads}'


def _init_cait(m: nn.Module) -> None:
    """CaiT's ``_init_weights``: truncated-normal(0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
