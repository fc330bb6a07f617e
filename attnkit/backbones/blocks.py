"""Residual blocks (torchvision layout and parameter names) with optional attention slots.

Both blocks keep torchvision's names (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``,
``downsample.0``, ``downsample.1``) so ImageNet state dicts load directly. Inserted modules live under
names torchvision does not use:

* ``attn``: an attention module on the block's output channels, placed either on the residual branch
  after the last norm, before the addition (``'after_conv3'``, the SE-Net placement) or after the
  addition and ReLU (``'after_block'``).
* ``sa``: a self-attention module (e.g. BoTNet's ``mhsa``) that *replaces* the 3x3 convolution
  ``conv2``; a stride-2 block passes ``stride=2`` to it (BoTNet average-pools after attention).
* ``pool`` and ``downsample_pool``: downsamplers (``lip``, ``softpool``, ...; registry ``POOLING``) that take
  over a stride-2 block's downsampling, as LIP-ResNet: ``pool`` runs on the input of the strided convolution
  (``conv2`` of a bottleneck, ``conv1`` of a basic block), which then runs at stride 1, and
  ``downsample_pool`` on the shortcut's input before its 1x1 conv (built at stride 1 by the ResNet).
  The convolutions keep their names and shapes, so plain ResNet state dicts still load.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from ..attention.insert import insert
from ..builder import build_attention, build_pooling
from ..errors import ConfigError
from .norm import build_norm

__all__ = ['BasicBlock', 'Bottleneck', 'ATTENTION_POSITIONS']

ATTENTION_POSITIONS = ('after_conv3', 'after_block')


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution without bias; padding = dilation keeps the size (divided by ``stride``)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _build_self_attention(cfg: Mapping[str, Any], channels: int, stride: int, identity_init: bool) -> nn.Module:
    """The module replacing a 3x3 conv: ``channels`` in = out, ``stride`` passed only when it is 2."""
    extra: dict[str, Any] = {'identity_init': identity_init}
    if stride != 1:
        extra['stride'] = stride
    return build_attention(dict(cfg), channels, **extra)


class _AttentionSlots(nn.Module):
    """Shared attention plumbing of the two blocks: the ``attention=`` option placed by
    :func:`attnkit.attention.insert` (the one mechanism), registered as ``attn`` on the block."""

    attn: nn.Module | None

    def _init_attention(self, attention: Mapping[str, Any] | None, position: str, channels: int,
                        identity_init: bool) -> None:
        if position not in ATTENTION_POSITIONS:
            raise ConfigError(f"attention position {position!r} is not one of "
                              f"{', '.join(repr(p) for p in ATTENTION_POSITIONS)}.")
        self.attn_position = position
        self.attn = None
        # set by attnkit.deploy.fuse_residual_tails: ``attn`` (an inference form, detached from the norm) runs
        # in _finish with the residual addition and the ReLU, in fewer passes over the map
        self.attn_fused_tail = False
        # set by the same function for a bottleneck whose conv3 is a bare 1x1 conv (its norm folded): ``attn`` also
        # runs conv3 and reads its statistics from conv3's input (a quarter of the map), ``forward_expansion``
        self.attn_reads_expansion = False
        if attention is not None:
            # 'after_conv3': on the branch after its last norm (bn3 / bn2), before the addition (SE-Net);
            # 'after_block': the block's own output (after the addition and ReLU).
            target = '' if position == 'after_block' else ('bn3' if hasattr(self, 'bn3') else 'bn2')
            insert(self, dict(attention, after=[target], channels=channels, name='attn'), identity_init=identity_init)

    @staticmethod
    def _conv_stride(pool: Mapping[str, Any] | None, stride: int) -> int:
        """Stride of the block's strided conv: 1 when a downsampler takes over its stride 2."""
        if pool is None or stride == 1:
            return stride
        if stride != 2:
            raise ConfigError(f'a downsampler halves the size; it cannot replace stride {stride}.')
        return 1

    def _init_pools(self, pool: Mapping[str, Any] | None, stride: int, main_channels: int,
                    in_channels: int) -> None:
        """Build ``pool`` (on the strided conv's input, ``main_channels``) and ``downsample_pool`` (on the
        shortcut's input) from the downsampler config ``pool`` when the block has stride 2 (else None)."""
        self.pool: nn.Module | None = None
        self.downsample_pool: nn.Module | None = None
        if self._conv_stride(pool, stride) == stride:
            return
        self.pool = build_pooling(dict(pool), main_channels)
        if self.downsample is not None:
            self.downsample_pool = build_pooling(dict(pool), in_channels)

    def _shortcut(self, x: Tensor) -> Tensor:
        """The identity path: ``x``, or ``downsample(downsample_pool(x))``."""
        if self.downsample is None:
            return x
        return self.downsample(x if self.downsample_pool is None else self.downsample_pool(x))

    def _finish(self, out: Tensor, identity: Tensor) -> Tensor:
        """Residual addition and ReLU (attention runs inside the modules it is attached to, or here with the
        addition when the fast path fused it: ``attn_fused_tail``)."""
        if self.attn_fused_tail:
            return self.attn.forward_residual(out, identity)
        return self.relu(out + identity)


class BasicBlock(_AttentionSlots):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34).

    Args:
        in_channels: input channels.
        planes: output channels (``expansion`` = 1).
        stride: stride of ``conv1`` (and of the shortcut's 1x1 conv).
        dilation: dilation of both 3x3 convolutions (torchvision refuses dilation for this block; we allow
            it so that ResNet-18/34 work at output stride 16/8).
        downsample: the shortcut projection (``conv1x1`` + norm) or None for the identity.
        groups, base_width: must be 1 and 64 (as torchvision).
        norm: a name accepted by :func:`attnkit.backbones.norm.build_norm`.
        attention: attention config without ``stages``/``position`` (``dict(type='se', ...)``) or None.
        attention_position: ``'after_conv3'`` (branch, after ``bn2`` here) or ``'after_block'``.
        self_attention: config of a module replacing ``conv2`` (named ``sa``) or None.
        identity_init: passed to every inserted module.
        pool: downsampler config (``dict(type='lip', ...)``) or None; with ``stride=2`` the module ``pool``
            downsamples the input of ``conv1`` (then at stride 1) and ``downsample_pool`` the shortcut's input
            (``downsample`` must then be built at stride 1).

    Shapes: (N, in_channels, H, W) -> (N, planes, H/stride, W/stride).
    """

    expansion: int = 1

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64, norm: str = 'bn',
                 attention: Mapping[str, Any] | None = None, attention_position: str = 'after_conv3',
                 self_attention: Mapping[str, Any] | None = None, identity_init: bool = False,
                 pool: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError(f"ResNet-18/34 (BasicBlock) need groups=1 and width_per_group=64, got "
                              f"groups={groups}, width_per_group={base_width}; use depth >= 50 for ResNeXt.")
        self.conv1 = conv3x3(in_channels, planes, self._conv_stride(pool, stride), dilation=dilation)
        self.bn1 = build_norm(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2: nn.Module | None = None
        self.sa: nn.Module | None = None
        if self_attention is None:
            self.conv2 = conv3x3(planes, planes, dilation=dilation)
        else:
            self.sa = _build_self_attention(self_attention, planes, 1, identity_init)
        self.bn2 = build_norm(norm, planes)
        self.downsample = downsample
        self.stride = stride
        self._init_pools(pool, stride, in_channels, in_channels)
        self._init_attention(attention, attention_position, planes, identity_init)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, planes, H/stride, W/stride)."""
        out = self.relu(self.bn1(self.conv1(x if self.pool is None else self.pool(x))))
        out = self.bn2(self.conv2(out) if self.sa is None else self.sa(out))
        return self._finish(out, self._shortcut(x))


class Bottleneck(_AttentionSlots):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet v1.5"), 1x1 expand, with a shortcut.

    Args:
        in_channels: input channels.
        planes: base width of the block; output channels are ``planes * 4``.
        stride: stride of ``conv2`` (or of the self-attention module replacing it) and of the shortcut.
        dilation: dilation of ``conv2``.
        downsample: the shortcut projection or None for the identity.
        groups: groups of ``conv2`` (ResNeXt cardinality).
        base_width: width per group; the inner width is ``int(planes * base_width / 64) * groups``.
        norm: a name accepted by :func:`attnkit.backbones.norm.build_norm`.
        attention: attention config without ``stages``/``position`` or None.
        attention_position: ``'after_conv3'`` (branch, after ``bn3``) or ``'after_block'``.
        self_attention: config of a module replacing ``conv2`` (named ``sa``; built with ``channels`` =
            inner width and ``stride=2`` in a downsampling block, stride 1 when ``pool`` downsamples) or None.
        identity_init: passed to every inserted module.
        pool: downsampler config or None; with ``stride=2`` the module ``pool`` downsamples the input of
            ``conv2`` (then at stride 1) and ``downsample_pool`` the shortcut's input (``downsample`` must then
            be built at stride 1).

    Shapes: (N, in_channels, H, W) -> (N, 4 * planes, H/stride, W/stride).
    """

    expansion: int = 4

    def __init__(self, in_channels: int, planes: int, *, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64, norm: str = 'bn',
                 attention: Mapping[str, Any] | None = None, attention_position: str = 'after_conv3',
                 self_attention: Mapping[str, Any] | None = None, identity_init: bool = False,
                 pool: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ConfigError(f"Bottleneck inner width int({planes} * {base_width} / 64) * {groups} is 0: "
                              "raise width_per_group or base_channels.")
        out_channels = planes * self.expansion
        conv_stride = self._conv_stride(pool, stride)
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = build_norm(norm, width)
        self.conv2: nn.Module | None = None
        self.sa: nn.Module | None = None
        if self_attention is None:
            self.conv2 = conv3x3(width, width, conv_stride, groups, dilation)
        else:
            self.sa = _build_self_attention(self_attention, width, conv_stride, identity_init)
        self.bn2 = build_norm(norm, width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = build_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self._init_pools(pool, stride, width, in_channels)
        self._init_attention(attention, attention_position, out_channels, identity_init)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, 4 * planes, H/stride, W/stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        if self.pool is not None:
            out = self.pool(out)
        out = self.relu(self.bn2(self.conv2(out) if self.sa is None else self.sa(out)))
        if self.attn_reads_expansion:  # the fast path: conv3, the attention, the addition and the ReLU in one call
            return self.attn.forward_expansion(out, self.conv3, self._shortcut(x))
        out = self.bn3(self.conv3(out))
        return self._finish(out, self._shortcut(x))


def last_norm(block: nn.Module) -> nn.Module:
    """The norm closing the residual branch (``bn3`` or ``bn2``), zeroed by ``zero_init_residual``."""
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2

