"""CLIP's attention pooling (Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021, the ``AttentionPool2d`` of the modified ResNet), as a classification head."""
from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from ...errors import ConfigError
from ...registry import HEADS
from ._attend import cross_attend, query_probs
from .base import ClassificationHead, check_positive_int

__all__ = ['AttentionPoolHead']


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ConfigError(f'AttentionPoolHead {name} must be an int or (height, width), got {value!r}.')
    for v in pair:
        check_positive_int('AttentionPoolHead', name, v)
    return pair  # type: ignore[return-value]


@HEADS.register_module('attnpool')
class AttentionPoolHead(ClassificationHead):
    """The mean token queries every position; the attended vector replaces global average pooling.

    With tokens ``t_0 = mean_i x_i`` and ``t_i = x_i`` (i = 1..HW), positional embeddings ``p``:
    ``z = c_proj(MHA(q = W_q (t_0 + p_0), k = W_k (t + p), v = W_v (t + p)))`` (one query, HW + 1 keys,
    head width d: ``softmax(q k^T / sqrt(d)) v`` per head), then ``logits = fc(dropout(z))``.
    The positional embeddings are learned for a ``feat_size`` grid and resampled (``interpolation``,
    antialiased, by timm's ``resample_abs_pos_embed``) to the input's H x W at run time; the mean
    token's embedding ``p_0`` is kept as it is.
    Parameter names follow CLIP (``positional_embedding``, ``q_proj``, ``k_proj``, ``v_proj``,
    ``c_proj``), so a CLIP ``visual.attnpool.*`` state dict loads into it (``strict=False``: no ``fc``).

    Args:
        in_channels: C (= CLIP's embed_dim). num_classes: K, or ``None`` for no classifier: forward
            then returns the pooled vector (N, out_dim) (CLIP's image embedding).
        feat_size: H x W (int or pair) the positional embeddings are learned for (7 for 224-px input
            at stride 32); other sizes are interpolated.
        heads: attention heads; ``None`` = C // 64 (CLIP's head width 64), 1 when C < 64. Must divide C.
        out_dim: width of ``c_proj``'s output (CLIP's output_dim); ``None`` = C.
        dropout: dropout on the pooled vector before ``fc``.
        interpolation: ``'bicubic'`` or ``'bilinear'``: how the positional grid is resampled (antialiased).
        in_index: see :class:`ClassificationHead`.

    Shapes: x (N, C, H, W), any H x W -> logits (N, K) (or (N, out_dim)); :meth:`pool` -> (N, out_dim).
    Recorded (``record(model)``): under the head's name (N, heads, H, W) = the weight of each position's
    feature in the pooled vector: its attention plus its 1/HW share of the mean token's
    (sums to 1 over positions); under ``name + '.mean'`` (N, heads) the attention on the mean token.
    """

    pooled_maps = '(N, heads, H, W)'

    def __init__(self, in_channels: int, num_classes: int | None, *, feat_size: int | Sequence[int] = 7,
                 heads: int | None = None, out_dim: int | None = None, dropout: float = 0.0,
                 interpolation: str = 'bicubic', in_index: int = -1) -> None:
        super().__init__(in_channels, num_classes, in_index=in_index)
        c = in_channels
        heads = max(1, c // 64) if heads is None else heads
        check_positive_int('AttentionPoolHead', 'heads', heads)
        if c % heads:
            raise ConfigError(f'AttentionPoolHead needs in_channels divisible by heads, got in_channels={c}, '
                              f'heads={heads}; pass heads= a divisor of {c}.')
        check_positive_int('AttentionPoolHead', 'out_dim', out_dim, allow_none=True)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f'AttentionPoolHead dropout must be in [0, 1), got {dropout!r}.')
        modes = ('bicubic', 'bilinear')  # resampled with antialias=True, which F.interpolate allows for these
        if interpolation not in modes:
            raise ConfigError(f'AttentionPoolHead interpolation must be one of {modes}, got {interpolation!r}.')
        self.feat_size = _pair(feat_size, 'feat_size')
        self.heads, self.interpolation = heads, interpolation
        self.out_dim = out_dim or c
        self.positional_embedding = nn.Parameter(
            torch.randn(self.feat_size[0] * self.feat_size[1] + 1, c) / c ** 0.5)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(c, c) for _ in range(3))
        self.c_proj = nn.Linear(c, self.out_dim)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):  # CLIP's initialize_parameters
            nn.init.normal_(proj.weight, std=c ** -0.5)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.out_dim, num_classes) if num_classes is not None else nn.Identity()

    def position_embedding(self, height: int, width: int) -> Tensor:
        """(1 + H*W, C): the mean token's embedding, then the grid resampled to H x W (row-major)."""
        pos = self.positional_embedding
        # exporting: no size comparison, so a dynamic-shape graph is not specialised to (or away from) feat_size
        if not torch.compiler.is_exporting() and (height, width) == self.feat_size:
            return pos
        return resample_abs_pos_embed(pos[None], [height, width], list(self.feat_size), num_prefix_tokens=1,
                                      interpolation=self.interpolation)[0]

    def pool(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """(N, C, H, W) -> (N, out_dim): the attention-pooled vector (records its map when recording)."""
        x = self.select(feats)
        h, w = x.shape[2:]
        tokens = x.flatten(2).transpose(1, 2)  # (N, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (N, 1 + HW, C)
        tokens = tokens + self.position_embedding(h, w).to(tokens.dtype)
        q = self.q_proj(tokens[:, :1])
        k = self.k_proj(tokens)
        out = cross_attend(q, k, self.v_proj(tokens), self.heads)  # (N, 1, C)
        if self.recording:
            probs = query_probs(q, k, self.heads)[:, :, 0]  # (N, heads, 1 + HW)
            mean_share = probs[:, :, :1]
            self.record_map((probs[:, :, 1:] + mean_share / (h * w)).unflatten(-1, (h, w)))
            self.record_map(mean_share[..., 0], '.mean')
        return self.c_proj(out[:, 0])

    def forward(self, feats: Tensor | Sequence[Tensor]) -> Tensor:
        """Args: feats (N, C, H, W) or a list of maps. Returns: logits (N, K), or (N, out_dim) without fc."""
        return self.fc(self.dropout(self.pool(feats)))

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, feat_size={self.feat_size}, heads={self.heads}, '
                f'out_dim={self.out_dim}')
